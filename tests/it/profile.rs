//! The test build's profile in Cargo.toml: proc macros and build scripts stay unoptimised.

/// Cargo gives `[profile.dev.package."*"]` precedence over `[profile.dev.build-override]`,
/// so an opt-level there also optimises every proc macro, build script and what they
/// use (syn, serde_derive, ...), which run only while compiling: 331 CPU-s instead of 43
/// in a test build from scratch. The dependencies take their opt-level from
/// `[profile.dev]`, and no build-override raises theirs.
#[test]
fn proc_macros_and_build_scripts_are_compiled_unoptimised() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let manifest: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    let dev = &manifest["profile"]["dev"];
    let all = dev.get("package").and_then(|p| p.get("*"));
    assert!(
        all.and_then(|a| a.get("opt-level")).is_none(),
        "[profile.dev.package.\"*\"] sets an opt-level, which proc macros and build scripts \
         take too: set the dependencies' in [profile.dev], this crate's in \
         [profile.dev.package.runway-exporter]"
    );
    let build = dev.get("build-override").and_then(|b| b.get("opt-level"));
    assert!(
        build.is_none_or(|o| o.as_integer() == Some(0)),
        "[profile.dev.build-override] optimises proc macros and build scripts: {build:?}"
    );
}
