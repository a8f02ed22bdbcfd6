//! `cargo xtask tidy`: the checks that keep the tree tidy, run by `.ci/run` before the
//! tests: formatting, clippy with warnings as errors, and documentation that names only
//! files and directories that exist (a code map that points at a moved file misleads
//! every newcomer who trusts it).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use walship_testkit::workspace_root;

use crate::cargo::{cargo, run_step_checked};

/// Top-level directories a repository path in the docs starts with.
const TOP_DIRS: &[&str] = &[
    "crates/", "bins/", "tests/", "xtask/", "deploy/", "bench/", ".ci/", ".cargo/",
];

pub fn run() -> Result<u8> {
    run_step_checked(cargo().args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs: run `cargo fmt --all`")?;
    run_step_checked(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let root = workspace_root();
    let missing = dangling_doc_paths(&root)?;
    if !missing.is_empty() {
        bail!(
            "documentation names paths that do not exist:\n- {}",
            missing.join("\n- ")
        );
    }
    eprintln!("tidy: formatting, clippy and documentation paths are clean");
    Ok(0)
}

/// Every `file: path` where a Markdown file of the repository (outside `target/` and
/// hidden directories) names a repository path, in backticks or as a relative link,
/// that does not exist.
pub fn dangling_doc_paths(root: &Path) -> Result<Vec<String>> {
    let mut docs = Vec::new();
    markdown_files(root, root, &mut docs)?;
    docs.sort();
    let mut missing = Vec::new();
    for doc in docs {
        let text =
            fs::read_to_string(&doc).with_context(|| format!("reading {}", doc.display()))?;
        let dir = doc.parent().unwrap_or(root);
        let shown = doc.strip_prefix(root).unwrap_or(&doc).display().to_string();
        for (path, relative_to_doc) in referenced_paths(&text) {
            let base = if relative_to_doc { dir } else { root };
            if !base.join(&path).exists() {
                missing.push(format!("{shown}: {path}"));
            }
        }
    }
    Ok(missing)
}

fn markdown_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type()?.is_dir() {
            if !name.starts_with('.') && path != root.join("target") && name != "node_modules" {
                markdown_files(root, &path, out)?;
            }
        } else if name.ends_with(".md") {
            out.push(path);
        }
    }
    Ok(())
}

/// Repository paths a Markdown text names: backticked spans that start with a
/// top-level directory (relative to the repository root), and relative link targets
/// (relative to the document). Globs, placeholders and URLs are skipped.
fn referenced_paths(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for (i, span) in text.split('`').enumerate() {
        if i % 2 == 1 && TOP_DIRS.iter().any(|d| span.starts_with(d)) && plain_path(span) {
            out.push((clean(span), false));
        }
    }
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        if !target.contains("://")
            && !target.starts_with('#')
            && !target.starts_with("mailto:")
            && plain_path(target)
        {
            out.push((clean(target), true));
        }
        rest = &rest[end..];
    }
    out
}

/// A path without spaces, globs or placeholders.
fn plain_path(s: &str) -> bool {
    !s.is_empty() && !s.contains([' ', '*', '<', '>', '{', '}', '$', '|', '(', '?'])
}

/// The path part of a reference: without a `#anchor` or a `:line` suffix.
fn clean(s: &str) -> String {
    let s = s.split('#').next().unwrap_or(s);
    s.split(':').next().unwrap_or(s).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_doc_naming_a_missing_file_is_reported_and_existing_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("crates/walship-wal/src")).unwrap();
        fs::write(root.join("crates/walship-wal/src/lib.rs"), "").unwrap();
        fs::create_dir_all(root.join("deploy")).unwrap();
        fs::write(root.join("deploy/pod.yaml"), "").unwrap();
        fs::write(
            root.join("ARCHITECTURE.md"),
            "| `crates/walship-wal` | `crates/walship-wal/src/lib.rs:10` | `crates/gone/src/x.rs` |\n\
             see [the pod](deploy/pod.yaml), [gone](deploy/gone.yaml), [web](https://x/y), \
             `crates/*/Cargo.toml`, `bench/results/<date>.md`\n",
        )
        .unwrap();
        fs::write(
            root.join("deploy/README.md"),
            "[pod](pod.yaml) [up](../ARCHITECTURE.md#x)\n",
        )
        .unwrap();
        fs::create_dir_all(root.join("target/doc")).unwrap();
        fs::write(root.join("target/doc/x.md"), "`crates/none`").unwrap();
        assert_eq!(
            dangling_doc_paths(root).unwrap(),
            vec![
                "ARCHITECTURE.md: crates/gone/src/x.rs".to_owned(),
                "ARCHITECTURE.md: deploy/gone.yaml".to_owned(),
            ]
        );
    }

    /// The repository's own documentation names only what exists.
    #[test]
    fn the_repository_docs_name_only_existing_paths() {
        let missing = dangling_doc_paths(&workspace_root()).unwrap();
        assert!(missing.is_empty(), "{missing:#?}");
    }
}
