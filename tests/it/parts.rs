//! The ledger's committed state is in owned parts, as ARCHITECTURE.md says: every field
//! of `ledger::Committed` is a part defined in a module of its own (not in
//! `ledger/mod.rs`, which routes calls between parts), and every field of a part is
//! private, so it changes only through the part's methods. Read with `syn`, as the
//! compiler reads the files.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, parsed, with its path.
fn files(dir: &Path) -> Vec<(PathBuf, syn::File)> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.clone(), syn::parse_file(&text).expect("parses")));
        }
    }
    out
}

/// The top-level structs named `name` in `files`, with the file of each.
fn structs<'a>(
    files: &'a [(PathBuf, syn::File)],
    name: &str,
) -> Vec<(&'a Path, &'a syn::ItemStruct)> {
    let mut found = Vec::new();
    for (path, file) in files {
        for item in &file.items {
            if let syn::Item::Struct(s) = item {
                if s.ident == name {
                    found.push((path.as_path(), s));
                }
            }
        }
    }
    found
}

/// The name a field's type ends with (`flows::Flows` is `Flows`).
fn type_name(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(p) => p.path.segments.last().unwrap().ident.to_string(),
        _ => panic!("a part's type is a plain path"),
    }
}

/// Where each part is defined, and whether every field of it is private.
fn check_parts(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let files = files(dir);
    let mod_rs = dir.join("mod.rs");
    let committed = structs(&files, "Committed");
    let [(_, committed)] = committed.as_slice() else {
        return Err("one struct Committed".into());
    };
    let mut parts = Vec::new();
    for field in &committed.fields {
        let name = type_name(&field.ty);
        let defs = structs(&files, &name);
        let [(path, part)] = defs.as_slice() else {
            return Err(format!("{name}: defined {} times", defs.len()));
        };
        if *path == mod_rs {
            return Err(format!(
                "{name} is defined in ledger/mod.rs, not in a module of its own"
            ));
        }
        for f in &part.fields {
            if !matches!(f.vis, syn::Visibility::Inherited) {
                let field = f
                    .ident
                    .as_ref()
                    .map_or("(unnamed)".into(), |i| i.to_string());
                return Err(format!("{name}.{field} is not private"));
            }
        }
        parts.push((name, path.to_path_buf()));
    }
    Ok(parts)
}

#[test]
fn every_committed_part_has_a_module_of_its_own_and_private_fields() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ledger");
    let parts = check_parts(&dir).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Outcomes",
            "OwnCounters",
            "Checkpoints",
            "ApiBook",
            "ProxyBook",
            "CreatedBook"
        ]
    );
}

#[test]
fn the_check_sees_a_part_in_mod_rs_and_a_public_field() {
    let dir = std::env::temp_dir().join(format!("parts-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write(
        "mod.rs",
        "pub struct Committed { a: A, pub b: b::B }\nstruct A { x: u64 }\n",
    );
    write("b.rs", "pub struct B { y: u64 }\n");
    let e = check_parts(&dir).unwrap_err();
    assert!(e.contains("A is defined in ledger/mod.rs"), "{e}");
    write("mod.rs", "pub struct Committed { a: a::A, pub b: b::B }\n");
    write("a.rs", "pub(super) struct A { x: u64 }\n");
    write("b.rs", "pub struct B { pub(super) y: u64 }\n");
    assert_eq!(check_parts(&dir).unwrap_err(), "B.y is not private");
    write("b.rs", "pub struct B { y: u64 }\n");
    assert_eq!(check_parts(&dir).unwrap().len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
