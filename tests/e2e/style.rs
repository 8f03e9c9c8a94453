//! House-style checks over the whole repository.

use cityops_e2e::{files_with_extension, repo_root};

#[test]
fn every_rust_file_starts_with_a_module_doc_line() {
    let root = repo_root();
    let files = files_with_extension(&root, "rs");
    assert!(
        files.len() > 20,
        "found only {} .rs files under {}",
        files.len(),
        root.display()
    );
    let offenders: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            !text.starts_with("//!")
        })
        .map(|path| {
            path.strip_prefix(&root)
                .unwrap_or(path)
                .display()
                .to_string()
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "these files do not start with a `//!` line: {offenders:?}"
    );
}

#[test]
fn the_ci_script_runs_exactly_the_readme_test_command() {
    let root = repo_root();
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("make demo") && readme.contains("make test"));
    let commands: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('#') && !l.starts_with("set ") && !l.starts_with("cd ")
        })
        .collect();
    assert_eq!(
        commands,
        ["exec make test"],
        ".ci/run must run exactly `make test`"
    );
}
