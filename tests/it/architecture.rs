//! The module graph: acyclic, and layered as ARCHITECTURE.md draws it.
//!
//! Read the way the compiler reads the crate, not as text: from `src/lib.rs`, every
//! `mod` declaration is followed to its file and parsed with `syn`. A module's uses of
//! another are every path that leaves it: each leaf of every `use` tree (groups nested to
//! any depth, `self`, renames, globs), every path in code (expressions, types, patterns,
//! attributes, `pub(in ..)`), paths inside macro invocations and `macro_rules!` bodies
//! (their tokens, `$crate` included), and `crate::` paths in attribute strings
//! (`#[serde(with = "crate::x")]`). `self::` and `super::` are resolved against the
//! module the path stands in, inline modules included.
//!
//! Test code counts. Items under `#[cfg(test)]` (or `cfg(all(test, ..))`, and whole
//! files declared by such a `mod`) are read like any other; the attribute covers exactly
//! the item it stands on. A test may reach one layer no further than its module's code
//! may: an upward edge from test code fails like any other, unless it is in
//! `TEST_UPWARD`, where each one is named with its reason.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// The layers, lowest first: a module uses only modules of lower layers.
const LAYERS: &[&[&str]] = &[
    &["clock", "labels", "lines", "sync"],
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

/// Upward edges allowed in test code only (from, to, why).
const TEST_UPWARD: &[(&str, &str, &str)] = &[
    (
        "ledger",
        "state",
        "the ledger parts' restore tests send their totals through the state file's format (state::through_header): what a commit keeps is what they must survive",
    ),
    (
        "runway_api",
        "record",
        "the SDK table's task statuses must be exactly the ones records read (record::Status::ALL)",
    ),
];

/// One use of a top-level module by another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    /// Only code under `#[cfg(test)]` has it.
    test_only: bool,
}

/// The top-level modules of a crate and every edge between two of them.
struct Crate {
    modules: BTreeSet<String>,
    edges: BTreeSet<Edge>,
}

/// The crate whose files `load` gives (paths relative to `src/`), read from `lib.rs`
/// down. A path to the crate root itself (a glob of it, which would hide what it brings
/// in) is an edge to `crate`.
fn read_crate(load: &dyn Fn(&Path) -> Option<String>) -> Crate {
    let mut reader = Reader {
        load,
        module: Vec::new(),
        dir: PathBuf::new(),
        test: false,
        modules: BTreeSet::new(),
        edges: BTreeSet::new(),
    };
    let lib = load(Path::new("lib.rs")).expect("lib.rs");
    reader.visit_file(&syn::parse_file(&lib).expect("lib.rs parses"));
    Crate {
        modules: reader.modules,
        edges: reader.edges,
    }
}

/// The real crate, read from `src/`.
fn imports() -> Crate {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    read_crate(&|p| std::fs::read_to_string(src.join(p)).ok())
}

/// Walks one module tree; `module` and `test` are those of the code being visited.
struct Reader<'a> {
    load: &'a dyn Fn(&Path) -> Option<String>,
    /// The module path from the crate root (empty at `lib.rs`).
    module: Vec<String>,
    /// Where this module's `mod x;` files are: `dir/x.rs` or `dir/x/mod.rs`.
    dir: PathBuf,
    test: bool,
    /// Top-level modules seen.
    modules: BTreeSet<String>,
    edges: BTreeSet<Edge>,
}

impl Reader<'_> {
    /// Notes a path of segments that stands in the current module.
    fn path(&mut self, segments: &[String]) {
        let Some(target) = resolve(&self.module, segments) else {
            return;
        };
        let Some(from) = self.module.first() else {
            return; // lib.rs declares every module
        };
        let to = target.first().cloned().unwrap_or_else(|| "crate".into());
        if &to != from {
            self.edges.insert(Edge {
                from: from.clone(),
                to,
                test_only: self.test,
            });
        }
    }

    /// Runs `visit` inside `module`/`dir`, test code when `test` is set (or already was).
    fn within(
        &mut self,
        name: Option<&str>,
        dir: PathBuf,
        test: bool,
        visit: impl FnOnce(&mut Self),
    ) {
        let saved = (self.dir.clone(), self.test);
        if let Some(name) = name {
            self.module.push(name.to_string());
        }
        self.dir = dir;
        self.test |= test;
        visit(self);
        if name.is_some() {
            self.module.pop();
        }
        (self.dir, self.test) = saved;
    }

    /// Paths in a token stream: `crate`, `$crate`, `self` or `super` followed by `::`.
    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Literal(lit) => self.string_path(&lit.to_string()),
                TokenTree::Ident(id) if ["crate", "self", "super"].contains(&&*id.to_string()) => {
                    let mut segments = vec![id.to_string()];
                    while let (
                        Some(TokenTree::Punct(a)),
                        Some(TokenTree::Punct(b)),
                        Some(TokenTree::Ident(next)),
                    ) = (trees.get(i + 1), trees.get(i + 2), trees.get(i + 3))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        segments.push(next.to_string());
                        i += 3;
                    }
                    if segments.len() > 1 {
                        self.path(&segments);
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// A string literal that names a crate path (`"crate::x::f"`, as serde's `with`).
    fn string_path(&mut self, literal: &str) {
        let Ok(lit) = syn::parse_str::<syn::LitStr>(literal) else {
            return;
        };
        let value = lit.value();
        if ["crate::", "self::", "super::"]
            .iter()
            .any(|p| value.starts_with(p))
        {
            let segments: Vec<String> = value.split("::").map(str::to_string).collect();
            self.path(&segments);
        }
    }

    /// `mod name;` (its file) or `mod name { .. }`, under its own `cfg(test)`.
    fn module(&mut self, m: &syn::ItemMod) {
        let name = m.ident.to_string();
        if self.module.is_empty() {
            self.modules.insert(name.clone());
        }
        let dir = self.dir.join(&name);
        let test = is_test(&m.attrs);
        for attr in &m.attrs {
            self.visit_attribute(attr);
        }
        match &m.content {
            Some((_, items)) => self.within(Some(&name), dir, test, |r| {
                items.iter().for_each(|item| r.visit_item(item));
            }),
            None => {
                let file = [self.dir.join(format!("{name}.rs")), dir.join("mod.rs")]
                    .into_iter()
                    .find_map(|p| (self.load)(&p))
                    .unwrap_or_else(|| panic!("no file for mod {name} in {:?}", self.dir));
                let parsed = syn::parse_file(&file).unwrap_or_else(|e| panic!("mod {name}: {e}"));
                self.within(Some(&name), dir, test, |r| r.visit_file(&parsed));
            }
        }
    }
}

/// The absolute module path (from the crate root) a path names, or `None` when it does
/// not start at the crate, this module or a parent (an external crate, a local name).
fn resolve(module: &[String], segments: &[String]) -> Option<Vec<String>> {
    let mut segments = segments.iter().map(String::as_str).peekable();
    let mut at: Vec<String> = match segments.peek()? {
        &"crate" | &"$crate" => Vec::new(),
        &"self" | &"super" => module.to_vec(),
        _ => return None,
    };
    if segments.peek() == Some(&"crate") || segments.peek() == Some(&"$crate") {
        segments.next();
    }
    while let Some(&s) = segments.peek() {
        match s {
            "self" => {}
            "super" => {
                at.pop();
            }
            _ => break,
        }
        segments.next();
    }
    at.extend(segments.filter(|s| *s != "self").map(str::to_string));
    Some(at)
}

/// Every leaf of a use tree as a path of segments (`*` for a glob).
fn flatten(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let leaf = |prefix: &Vec<String>, last: &str| {
        let mut path = prefix.clone();
        path.push(last.to_string());
        path
    };
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => out.push(leaf(prefix, &n.ident.to_string())),
        syn::UseTree::Rename(r) => out.push(leaf(prefix, &r.ident.to_string())),
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| flatten(t, prefix, out)),
    }
}

/// `#[cfg(test)]` or `#[cfg(all(.., test, ..))]`: the item exists only in test builds.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        let syn::Meta::List(list) = &attr.meta else {
            return false;
        };
        if !list.path.is_ident("cfg") {
            return false;
        }
        let tokens: Vec<TokenTree> = list.tokens.clone().into_iter().collect();
        match tokens.as_slice() {
            [TokenTree::Ident(id)] => id == "test",
            [TokenTree::Ident(all), TokenTree::Group(g)] if all == "all" => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                inner
                    .split(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ','))
                    .any(|part| matches!(part, [TokenTree::Ident(id)] if id == "test"))
            }
            _ => false,
        }
    })
}

/// The attributes of an item of any kind.
fn attrs_of(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item::*;
    match item {
        Const(i) => &i.attrs,
        Enum(i) => &i.attrs,
        ExternCrate(i) => &i.attrs,
        Fn(i) => &i.attrs,
        ForeignMod(i) => &i.attrs,
        Impl(i) => &i.attrs,
        Macro(i) => &i.attrs,
        Mod(i) => &i.attrs,
        Static(i) => &i.attrs,
        Struct(i) => &i.attrs,
        Trait(i) => &i.attrs,
        TraitAlias(i) => &i.attrs,
        Type(i) => &i.attrs,
        Union(i) => &i.attrs,
        Use(i) => &i.attrs,
        _ => &[],
    }
}

impl<'ast> Visit<'ast> for Reader<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if let syn::Item::Mod(m) = item {
            return self.module(m);
        }
        let dir = self.dir.clone();
        self.within(None, dir, is_test(attrs_of(item)), |r| {
            syn::visit::visit_item(r, item)
        });
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs: &[syn::Attribute] = match item {
            syn::ImplItem::Const(i) => &i.attrs,
            syn::ImplItem::Fn(i) => &i.attrs,
            syn::ImplItem::Type(i) => &i.attrs,
            syn::ImplItem::Macro(i) => &i.attrs,
            _ => &[],
        };
        let dir = self.dir.clone();
        self.within(None, dir, is_test(attrs), |r| {
            syn::visit::visit_impl_item(r, item)
        });
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let mut leaves = Vec::new();
        let root = item.leading_colon.is_some(); // `use ::x`: an external crate
        flatten(&item.tree, &mut Vec::new(), &mut leaves);
        for leaf in leaves.iter().filter(|_| !root) {
            self.path(leaf);
        }
        item.attrs.iter().for_each(|a| self.visit_attribute(a));
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        // `crate`, `self` or `super` alone names no item (`pub(crate)`, `pub(super)`).
        if path.leading_colon.is_none() && path.segments.len() > 1 {
            let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.path(&segments);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        if !attr.path().is_ident("doc") {
            match &attr.meta {
                syn::Meta::List(list) => self.tokens(list.tokens.clone()),
                syn::Meta::NameValue(nv) => self.tokens(quote_expr(&nv.value)),
                syn::Meta::Path(_) => {}
            }
        }
        syn::visit::visit_attribute(self, attr);
    }
}

/// A `name = "value"` attribute's value as tokens (a string literal is all it can be here).
fn quote_expr(expr: &syn::Expr) -> TokenStream {
    match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => TokenTree::Literal(proc_macro2::Literal::string(&s.value())).into(),
        _ => TokenStream::new(),
    }
}

/// The edges that break the layers: upward, sideways, to the crate root or to a module in
/// no layer; upward test edges listed in `TEST_UPWARD` excepted.
fn violations(edges: &BTreeSet<Edge>) -> Vec<String> {
    let layer = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let allowed = |e: &Edge| {
        e.test_only
            && TEST_UPWARD
                .iter()
                .any(|(from, to, _)| *from == e.from && *to == e.to)
    };
    edges
        .iter()
        .filter(|e| !matches!((layer(&e.from), layer(&e.to)), (Some(f), Some(t)) if t < f))
        .filter(|e| !allowed(e))
        .map(|e| {
            let test = if e.test_only { " (test code)" } else { "" };
            format!("{} -> {}{test}", e.from, e.to)
        })
        .collect()
}

#[test]
fn every_module_imports_only_lower_layers() {
    let krate = imports();
    for module in &krate.modules {
        assert!(
            LAYERS.iter().any(|l| l.contains(&module.as_str())),
            "module {module} is in no layer: add it to LAYERS (and ARCHITECTURE.md)"
        );
    }
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(
            krate.modules.contains(*module),
            "LAYERS names {module}, which lib.rs does not declare"
        );
    }
    let upward = violations(&krate.edges);
    assert!(
        upward.is_empty(),
        "imports that do not point to a lower layer: {upward:?}"
    );
    for (from, to, why) in TEST_UPWARD {
        assert!(
            krate
                .edges
                .iter()
                .any(|e| e.test_only && e.from == *from && e.to == *to),
            "TEST_UPWARD lists {from} -> {to} ({why}), which no test uses any more: remove it"
        );
    }
}

#[test]
fn the_import_reader_sees_the_real_crate() {
    let edges = imports().edges;
    let has = |from: &str, to: &str, test_only: bool| {
        edges.contains(&Edge {
            from: from.into(),
            to: to.into(),
            test_only,
        })
    };
    // Known edges, so that the reader is seen to read (lib.rs, mod.rs, app/commit.rs).
    assert!(has("app", "pipeline", false));
    assert!(has("ledger", "classify", false));
    assert!(has("http", "metrics", false));
    assert!(!edges
        .iter()
        .any(|e| e.from == "ledger" && e.to == "pipeline"));
    assert!(edges.iter().any(|e| e.test_only), "test code is read");
}

/// The crate made of `files` (path under src/, text).
fn crate_of(files: &[(&str, &str)]) -> Crate {
    let files: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect();
    read_crate(&|p| files.get(p).cloned())
}

/// Edges as `from->to`, ` test` after those of test code only.
fn names(krate: &Crate) -> Vec<String> {
    let name = |e: &Edge| {
        let test = if e.test_only { " test" } else { "" };
        format!("{}->{}{test}", e.from, e.to)
    };
    krate.edges.iter().map(name).collect()
}

const LIB: &str = "pub mod app; pub mod clock; pub mod ledger; pub mod pipeline;";

/// The crate `LIB` with `clock.rs` as given and the other modules (nearly) empty.
fn clock_crate(clock: &str) -> Crate {
    crate_of(&[
        ("lib.rs", LIB),
        ("app.rs", ""),
        ("pipeline.rs", ""),
        ("ledger/mod.rs", "mod inner;"),
        ("ledger/inner.rs", ""),
        ("clock.rs", clock),
    ])
}

fn clock_is(clock: &str) -> Vec<String> {
    names(&clock_crate(clock))
}

#[test]
fn a_grouped_import_is_two_edges() {
    // The text reader saw `crate::{` and no module name after it: no edge at all.
    let text = "use crate::{app, pipeline};";
    assert_eq!(clock_is(text), ["clock->app", "clock->pipeline"]);
    assert_eq!(
        violations(&clock_crate(text).edges),
        ["clock -> app", "clock -> pipeline"]
    );
}

#[test]
fn a_one_line_cfg_test_item_covers_only_itself() {
    // The text reader skipped from `#[cfg(test)]` to the next `}` at its indent: past
    // the upward import below it, to the end of the function after it.
    let text = "#[cfg(test)]\nuse std::fmt;\nuse crate::app::run;\n\nfn f() {\n}\n";
    assert_eq!(clock_is(text), ["clock->app"]);
    assert_eq!(violations(&clock_crate(text).edges), ["clock -> app"]);
    let text = "#[cfg(test)]\nuse crate::pipeline::x;\nuse crate::app::run;\n";
    assert_eq!(clock_is(text), ["clock->app", "clock->pipeline test"]);
}

#[test]
fn nested_groups_self_and_renames_are_read() {
    assert_eq!(
        clock_is("use crate::{ledger::{self, inner::{A, B as C}}, app::{*}};"),
        ["clock->app", "clock->ledger"]
    );
    assert_eq!(
        clock_is("use crate::{ledger, {clock::X, pipeline::{self as p}}};"),
        ["clock->ledger", "clock->pipeline"]
    );
    // Its own module, an external crate, a local name: no edges.
    assert!(clock_is("use self::x; use crate::clock::y; use ::app::y; use app::z;").is_empty());
}

#[test]
fn super_and_self_resolve_to_their_modules() {
    let krate = crate_of(&[
        ("lib.rs", LIB),
        ("app.rs", ""),
        ("pipeline.rs", ""),
        (
            "clock.rs",
            "mod a { mod b { use super::super::super::app::run; use super::super::c; } }",
        ),
        ("ledger/mod.rs", "mod inner;"),
        (
            "ledger/inner.rs",
            "use super::super::pipeline; use super::Own; use self::x::y;",
        ),
    ]);
    assert_eq!(names(&krate), ["clock->app", "ledger->pipeline"]);
    // `super` of a top-level module is the crate root: its glob would hide what it uses.
    assert_eq!(clock_is("use super::*;"), ["clock->crate"]);
    assert_eq!(
        violations(&clock_crate("use super::*;").edges),
        ["clock -> crate"]
    );
}

#[test]
fn paths_in_code_macros_and_attributes_are_uses() {
    assert_eq!(clock_is("fn f() { crate::app::run(); }"), ["clock->app"]);
    assert_eq!(
        clock_is("fn f() -> crate::pipeline::T { todo!() }"),
        ["clock->pipeline"]
    );
    assert_eq!(
        clock_is("fn f() { let x = super::ledger::inner::X { a: 1 }; }"),
        ["clock->ledger"]
    );
    assert_eq!(
        clock_is("fn f() { println!(\"{}\", crate::app::NAME); }"),
        ["clock->app"]
    );
    assert_eq!(
        clock_is("macro_rules! m { () => { $crate::ledger::x() }; }"),
        ["clock->ledger"]
    );
    assert_eq!(
        clock_is("struct S { #[serde(with = \"crate::app::form\")] a: u8 }"),
        ["clock->app"]
    );
    // Visibilities name the crate or a parent, no item of another module.
    assert!(
        clock_is("pub(crate) fn f() {} pub(super) struct S; pub(in crate::clock) fn g() {}")
            .is_empty()
    );
    // Comments and doc links are no uses.
    assert!(clock_is("// crate::app::x\n/// [`crate::app::x`]\nfn f() {}").is_empty());
}

#[test]
fn test_code_counts_and_only_listed_upward_test_edges_pass() {
    let text = "#[cfg(test)]\nmod tests { use crate::app::x; }\n\
                #[cfg(all(test, unix))]\nfn g() { crate::pipeline::y(); }";
    assert_eq!(clock_is(text), ["clock->app test", "clock->pipeline test"]);
    assert_eq!(
        violations(&clock_crate(text).edges),
        ["clock -> app (test code)", "clock -> pipeline (test code)"]
    );
    // A file declared by a `#[cfg(test)] mod` is test code throughout.
    let krate = crate_of(&[
        ("lib.rs", LIB),
        ("app.rs", ""),
        ("pipeline.rs", ""),
        ("clock.rs", ""),
        ("ledger/mod.rs", "#[cfg(test)]\nmod inner;"),
        ("ledger/inner.rs", "use crate::pipeline::x;"),
    ]);
    assert_eq!(names(&krate), ["ledger->pipeline test"]);
    // `cfg(not(test))` and `cfg(any(test, ..))` are built outside tests: production code.
    assert_eq!(
        clock_is("#[cfg(not(test))]\nuse crate::app::x;\n#[cfg(any(test, unix))]\nuse crate::pipeline::y;"),
        ["clock->app", "clock->pipeline"]
    );
}
