//! The pricing table: credits per second of video or per image, by model.
//!
//! Used only when a task has no credits of its own (no cost, no credits field) and no
//! `estimatedCost` of Runway's was seen for it: an *estimate* is `per_second x duration`
//! or `per_image`. Data, not code: `config/pricing.toml` is compiled in and can be
//! replaced by a file. Every row names its `source` (where the price comes from); a row
//! without one is a configuration error, so that no price enters the table unexplained.

use rustc_hash::FxHashMap as HashMap;
use std::path::Path;

use serde::Deserialize;

/// The pricing table shipped with the binary.
pub const BUILTIN_PRICING: &str = include_str!("../config/pricing.toml");

/// How one model is priced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub per_second: Option<f64>,
    pub per_image: Option<f64>,
}

/// A row of the table as written: a price and where it comes from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    per_second: Option<f64>,
    per_image: Option<f64>,
    /// Where the price comes from. Required, and not blank.
    source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PricingFile {
    #[serde(default)]
    models: HashMap<String, Row>,
}

/// A problem with a pricing table.
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("cannot read pricing table {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("pricing table {origin} is not valid: {source}")]
    Parse {
        origin: String,
        source: toml::de::Error,
    },
    #[error("pricing table {origin}: model {model:?}: {problem}")]
    Model {
        origin: String,
        model: String,
        problem: &'static str,
    },
}

/// Credit prices by model.
#[derive(Debug, Clone, Default)]
pub struct Pricing {
    models: HashMap<String, Price>,
}

impl Pricing {
    pub fn builtin() -> Pricing {
        Pricing::parse(BUILTIN_PRICING, "(built in)").expect("the built-in pricing table is valid")
    }

    pub fn from_file(path: &Path) -> Result<Pricing, PricingError> {
        let text = std::fs::read_to_string(path).map_err(|source| PricingError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Pricing::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Pricing, PricingError> {
        let file: PricingFile = toml::from_str(text).map_err(|source| PricingError::Parse {
            origin: origin.to_string(),
            source,
        })?;
        let mut models = HashMap::default();
        for (model, row) in file.models {
            let bad = |problem| PricingError::Model {
                origin: origin.to_string(),
                model: model.clone(),
                problem,
            };
            if row.source.as_deref().is_none_or(|s| s.trim().is_empty()) {
                return Err(bad(
                    "give its source: where the price comes from (source = \"...\")",
                ));
            }
            let price = Price {
                per_second: row.per_second,
                per_image: row.per_image,
            };
            match (price.per_second, price.per_image) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(bad("give exactly one of per_second and per_image"))
                }
                (Some(p), None) | (None, Some(p)) if !(p.is_finite() && p >= 0.0) => {
                    return Err(bad("a price is a finite number of credits, 0 or more"))
                }
                _ => {}
            }
            models.insert(model, price);
        }
        Ok(Pricing { models })
    }

    /// Estimated credits of one task, or `None` when the table cannot say.
    pub fn estimate(&self, model: &str, duration: Option<f64>) -> Option<f64> {
        let price = self.models.get(model)?;
        match (price.per_second, price.per_image) {
            (Some(per_second), _) => duration.map(|d| per_second * d),
            (None, Some(per_image)) => Some(per_image),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates() {
        let p = Pricing::builtin();
        assert_eq!(p.estimate("gen4_turbo", Some(10.0)), Some(50.0));
        assert_eq!(p.estimate("gen4.5", Some(5.0)), Some(60.0));
        assert_eq!(p.estimate("veo3", Some(8.0)), Some(320.0));
        assert_eq!(
            p.estimate("gen4_turbo", None),
            None,
            "video needs a duration"
        );
        assert_eq!(p.estimate("gen4_image", None), Some(5.0));
        assert_eq!(p.estimate("gen4_image_turbo", Some(99.0)), Some(2.0));
        assert_eq!(p.estimate("unknown", Some(10.0)), None);
    }

    #[test]
    fn bad_tables_name_the_model() {
        for (text, needle) in [
            (
                "[models.a]\nper_second = 1\nper_image = 2\nsource = \"s\"",
                "\"a\"",
            ),
            ("[models.b]\nsource = \"s\"", "\"b\""),
            ("[models.c]\nper_second = -1\nsource = \"s\"", "\"c\""),
            ("[models.d]\nper_minute = 1\nsource = \"s\"", "per_minute"),
            ("[models.e]\nper_second = 1", "\"e\": give its source"),
            (
                "[models.f]\nper_image = 1\nsource = \" \"",
                "\"f\": give its source",
            ),
        ] {
            let err = Pricing::parse(text, "t").unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
