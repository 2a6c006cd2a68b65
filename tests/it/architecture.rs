//! The module graph: acyclic, and layered as ARCHITECTURE.md draws it. Read from the
//! sources (`crate::<module>` paths outside comments and test code), so a new import
//! that points upward fails here, with the edge named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, lowest first: a module uses only modules of lower layers.
const LAYERS: &[&[&str]] = &[
    &["clock", "labels", "lines"],
    &[
        "classify",
        "pricing",
        "deadletter",
        "webconfig",
        "runway_api",
    ],
    &["record"],
    &["ledger"],
    &["state", "metrics", "config"],
    &["pipeline"],
    &["source", "http", "proxy"],
    &["app"],
];

/// `crate::<module>` paths of each top-level module, outside comments and code under
/// `#[cfg(test)]` (rustfmt's layout: the item ends at a `}` of the attribute's indent).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::<String, BTreeSet<String>>::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let rel = path.strip_prefix(&src).unwrap();
        let module = match rel.components().count() {
            1 => rel.file_stem().unwrap().to_string_lossy().into_owned(),
            _ => rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .into_owned(),
        };
        if module == "main" || module == "lib" {
            continue;
        }
        let used = graph.entry(module.clone()).or_default();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut skip_until: Option<String> = None;
        for line in text.lines() {
            if let Some(end) = &skip_until {
                if line == end {
                    skip_until = None;
                }
                continue;
            }
            let code = line.trim_start();
            if code.starts_with("#[cfg(test)]") {
                let indent = &line[..line.len() - code.len()];
                skip_until = Some(format!("{indent}}}"));
                continue;
            }
            if code.starts_with("//") {
                continue;
            }
            for (i, _) in line.match_indices("crate::") {
                let before = line[..i].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                    continue;
                }
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    used.insert(name);
                }
            }
        }
    }
    graph
}

#[test]
fn every_module_imports_only_lower_layers() {
    let layer = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let graph = imports();
    let mut upward = Vec::new();
    for (module, used) in &graph {
        let Some(from) = layer(module) else {
            panic!("module {module} is in no layer: add it to LAYERS (and ARCHITECTURE.md)");
        };
        for target in used {
            match layer(target) {
                Some(to) if to < from => {}
                _ => upward.push(format!("{module} -> {target}")),
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that do not point to a lower layer: {upward:?}"
    );
    // Layers make the graph acyclic; the graph has every module.
    assert!(graph.len() >= LAYERS.iter().map(|l| l.len()).sum::<usize>());
}

#[test]
fn the_import_reader_sees_imports_and_skips_tests_and_comments() {
    let graph = imports();
    // Known edges, so that the reader is seen to read.
    assert!(graph["app"].contains("pipeline"));
    assert!(graph["ledger"].contains("classify"));
    assert!(graph["http"].contains("metrics"));
    // ledger's tests and docs name the pipeline; its code does not.
    assert!(
        !graph["ledger"].contains("pipeline"),
        "{:?}",
        graph["ledger"]
    );
}
