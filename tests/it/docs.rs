//! The documentation's links: every relative link and image in README.md, docs/*.md and
//! benches/README.md names a file that exists, and every `#anchor` names a heading of
//! its target file by GitHub's slug. The Markdown is read by a CommonMark parser
//! (pulldown-cmark), so links in code blocks are not links and headings are what a
//! renderer sees.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pulldown_cmark::{Event, Parser, Tag, TagEnd};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// GitHub's anchor for a heading's text: lower case, every space a hyphen, letters,
/// digits, `-` and `_` kept, anything else dropped.
fn slug(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown text's headings, a repeated slug numbered `-1`, `-2`...
/// as GitHub numbers it (github-slugger: the first free `slug-N`).
pub fn anchors(markdown: &str) -> Vec<String> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut found = Vec::new();
    let mut heading: Option<String> = None;
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let base = slug(&heading.take().unwrap_or_default());
                let mut anchor = base.clone();
                while seen.contains_key(&anchor) {
                    let n = seen.entry(base.clone()).or_default();
                    *n += 1;
                    anchor = format!("{base}-{n}");
                }
                seen.insert(anchor.clone(), 0);
                found.push(anchor);
            }
            _ => {}
        }
    }
    found
}

/// The destinations of a Markdown text's links and images.
fn destinations(markdown: &str) -> Vec<String> {
    Parser::new(markdown)
        .filter_map(|event| match event {
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                Some(dest_url.to_string())
            }
            _ => None,
        })
        .collect()
}

/// Whether a destination names a scheme (`https:`, `mailto:`), so is not a file here.
fn is_absolute(dest: &str) -> bool {
    let head = dest.split(['/', '#', '?']).next().unwrap_or("");
    head.contains(':')
}

/// Why a relative destination, written in the file `from`, does not resolve; None when
/// it does. `path#anchor`, `path` or `#anchor`.
pub fn unresolved(from: &Path, dest: &str) -> Option<String> {
    let (path, anchor) = dest.split_once('#').unwrap_or((dest, ""));
    let target = if path.is_empty() {
        from.to_path_buf()
    } else {
        from.parent().unwrap_or(Path::new("")).join(path)
    };
    if !target.exists() {
        return Some(format!(
            "{}: {dest}: no file {}",
            from.display(),
            target.display()
        ));
    }
    if anchor.is_empty() {
        return None;
    }
    let text = std::fs::read_to_string(&target).unwrap_or_default();
    let is_markdown = target.extension().is_some_and(|e| e == "md");
    (!is_markdown || !anchors(&text).iter().any(|a| a == anchor)).then(|| {
        format!(
            "{}: {dest}: no heading #{anchor} in {}",
            from.display(),
            target.display()
        )
    })
}

/// Every relative link of a Markdown file that does not resolve.
fn broken_links(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    destinations(&text)
        .iter()
        .filter(|d| !is_absolute(d))
        .filter_map(|d| unresolved(file, d))
        .collect()
}

/// README.md, benches/README.md and every docs/*.md.
fn documentation() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("benches/README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files
}

#[test]
fn every_relative_link_and_anchor_in_the_documentation_resolves() {
    let files = documentation();
    for name in ["operations", "security", "metrics", "runbook"] {
        assert!(
            files.contains(&root().join(format!("docs/{name}.md"))),
            "docs/{name}.md is missing"
        );
    }
    let broken: Vec<String> = files.iter().flat_map(|f| broken_links(f)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let links = destinations(&readme);
    for doc in [
        "docs/operations.md",
        "docs/security.md",
        "docs/metrics.md",
        "docs/runbook.md",
        "benches/README.md",
    ] {
        assert!(
            links.iter().any(|l| l.starts_with(doc)),
            "README.md does not link {doc}"
        );
    }
}

#[test]
fn the_link_check_finds_a_missing_file_and_a_missing_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("docs");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(
        sub.join("b.md"),
        "# Title\n\n## The `scan` command, step 2!\n\n## Notes\n\n### Notes\n\n```\n# not a heading\n```\n",
    )
    .unwrap();
    let a = dir.path().join("a.md");
    std::fs::write(
        &a,
        "# A\n\n[ok](docs/b.md) [ok](docs/b.md#the-scan-command-step-2) \
         [ok](docs/b.md#notes-1) [ok](#a) [web](https://example.com/x.md#nothing) \
         ![img](docs/b.md)\n\n\
         [gone](docs/c.md) [bad](docs/b.md#not-a-heading) [bad](docs/b.md#notes-2) \
         [bad](#b) ![gone](docs/c.png)\n\n    [code](nowhere.md)\n",
    )
    .unwrap();
    let broken = broken_links(&a);
    let said: Vec<&str> = broken
        .iter()
        .map(|b| b.split(": ").nth(1).unwrap())
        .collect();
    assert_eq!(
        said,
        [
            "docs/c.md",
            "docs/b.md#not-a-heading",
            "docs/b.md#notes-2",
            "#b",
            "docs/c.png"
        ],
        "{broken:#?}"
    );
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(
        slug("Nothing lost, nothing twice"),
        "nothing-lost-nothing-twice"
    );
    assert_eq!(slug("RunwayExporterDown"), "runwayexporterdown");
    assert_eq!(
        slug("The clock stepped while the exporter runs"),
        "the-clock-stepped-while-the-exporter-runs"
    );
    assert_eq!(slug("Scrapes: `/metrics` & gzip"), "scrapes-metrics--gzip");
    assert_eq!(slug("snake_case keys"), "snake_case-keys");
}
