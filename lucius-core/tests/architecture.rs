//! Architecture invariants that a compiler cannot see: the core's dependency tree holds no
//! network, Azure or async-runtime crate, its source reads no clock, and no crate of the
//! workspace turns serde_json's maps into insertion-ordered ones.

use std::path::Path;
use std::process::Command;

/// `cargo tree <args> --prefix none --offline`, run from this crate; its stdout.
fn cargo_tree(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .arg("tree")
        .args(args)
        .args(["--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn core_depends_on_no_network_azure_or_runtime_crate() {
    let tree = cargo_tree(&["-p", "lucius-core", "-e", "normal"]);
    assert!(
        tree.contains("lucius-core"),
        "unexpected cargo tree output: {tree}"
    );
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        for banned in ["hyper", "reqwest", "tokio", "mio", "socket2", "h2"] {
            assert_ne!(name, banned, "lucius-core depends on {banned}");
        }
        assert!(!name.starts_with("azure"), "lucius-core depends on {name}");
    }
}

#[test]
fn serde_json_maps_stay_sorted_in_every_build_of_the_workspace() {
    // `lucius_core::Json` texts are equal exactly when their values are because
    // serde_json's maps iterate in key order; its `preserve_order` feature, enabled by any
    // crate of the workspace graph, would make them keep insertion order instead.
    let tree = cargo_tree(&["--workspace", "-e", "features", "-i", "serde_json"]);
    assert!(
        tree.contains("serde_json feature \"raw_value\""),
        "unexpected cargo tree output: {tree}"
    );
    assert!(
        !tree.contains("serde_json feature \"preserve_order\""),
        "a dependency enables serde_json/preserve_order:\n{tree}"
    );
}

#[test]
fn core_source_reads_no_clock() {
    fn walk(dir: &Path, hits: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("source dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, hits);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source file");
                for needle in [
                    "SystemTime::now",
                    "Instant::now",
                    "thread::sleep",
                    "std::net::",
                    "std::fs::",
                ] {
                    if text.contains(needle) {
                        hits.push(format!("{}: {needle}", path.display()));
                    }
                }
            }
        }
    }
    let mut hits = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut hits,
    );
    assert!(
        hits.is_empty(),
        "IO or clock reads in lucius-core: {hits:?}"
    );
}
