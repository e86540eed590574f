//! Every configuration variable named in the docs is read by the code, and every variable the
//! code reads is documented in docs/configuration.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            // Tests set variables of their own; `target` is build output.
            if name != "tests" && name != "target" {
                files(&path, ext, out);
            }
        } else if name.ends_with(ext) {
            out.push(path);
        }
    }
}

/// `DSXCONNECT_…` / `DSXCONNECTOR_…` names in `text`; prefixes such as `DSXCONNECT_AUTH__*`
/// (ending in `_`) are not variables.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("DSXCONNECT") {
        let start = i + pos;
        let before_ok = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_uppercase() || bytes[end].is_ascii_digit() || bytes[end] == b'_')
        {
            end += 1;
        }
        let name = &text[start..end];
        if before_ok && name.contains('_') && !name.ends_with('_') {
            out.insert(name.to_owned());
        }
        i = end.max(start + 1);
    }
    out
}

/// Names the code reads: literal strings, connector settings read through `var("X")` (prefixed
/// with `DSXCONNECTOR_`), and the logging pair built from `init_logging("<PREFIX>")`.
fn code_names() -> BTreeSet<String> {
    let mut sources = Vec::new();
    files(&repo().join("crates"), ".rs", &mut sources);
    files(&repo().join("connectors"), ".rs", &mut sources);
    let mut out = BTreeSet::new();
    for path in sources {
        let text = std::fs::read_to_string(&path).unwrap();
        let path = path.to_string_lossy();
        if path.contains("dsx-testkit") {
            continue; // test support, not configuration
        }
        // Only the non-test part of a source file.
        let text = text.split("#[cfg(test)]").next().unwrap();
        for piece in text.split('"').skip(1).step_by(2) {
            let literal = names(piece);
            if literal.len() == 1 && literal.contains(piece) {
                out.insert(piece.to_owned());
            }
        }
        // The connector framework reads its settings as `var("NAME")` → `DSXCONNECTOR_NAME`.
        if path.contains("dsx-connector/") || path.contains("connectors/") {
            for (before, piece) in text.split("var(\"").zip(text.split("var(\"").skip(1)) {
                let name = &piece[..piece.find('"').unwrap()];
                let plain_env = before.ends_with("env::");
                if !plain_env && !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                    out.insert(format!("DSXCONNECTOR_{name}"));
                }
            }
        }
        for piece in text.split("init_logging(\"").skip(1) {
            let prefix = &piece[..piece.find('"').unwrap()];
            out.insert(format!("{prefix}_LOG_LEVEL"));
            out.insert(format!("{prefix}_LOG_FORMAT"));
        }
    }
    // Bare prefixes passed around in code are not variables.
    out.retain(|n| n != "DSXCONNECT" && n != "DSXCONNECTOR");
    out
}

/// Documented as not supported yet (docs/configuration.md says so next to them).
const DOCUMENTED_UNSUPPORTED: &[&str] = &[];

#[test]
fn docs_and_code_name_the_same_variables() {
    let code = code_names();
    assert!(code.len() > 60, "suspiciously few variables found in the code: {code:?}");

    let mut docs = vec![repo().join("README.md")];
    files(&repo().join("docs"), ".md", &mut docs);
    let mut documented = BTreeSet::new();
    for path in &docs {
        for name in names(&std::fs::read_to_string(path).unwrap()) {
            if !DOCUMENTED_UNSUPPORTED.contains(&name.as_str()) {
                assert!(code.contains(&name), "{} names {name}, which no code reads", path.display());
            }
            documented.insert(name);
        }
    }

    let reference = names(&std::fs::read_to_string(repo().join("docs/configuration.md")).unwrap());
    let missing: Vec<_> = code.difference(&reference).collect();
    assert!(missing.is_empty(), "read by the code but missing from docs/configuration.md: {missing:?}");

    let reference_text = std::fs::read_to_string(repo().join("docs/configuration.md")).unwrap();
    for name in DOCUMENTED_UNSUPPORTED {
        let line = reference_text.lines().find(|l| l.contains(name)).expect("listed");
        assert!(line.contains("Not supported"), "{name} must be marked as not supported: {line}");
    }
}

#[test]
fn the_scanner_finds_names_and_skips_prefixes() {
    let found = names("set `DSXCONNECT_AUTH__ENABLED=true`, see DSXCONNECT_AUTH__* and XDSXCONNECT_NO");
    assert_eq!(found.into_iter().collect::<Vec<_>>(), vec!["DSXCONNECT_AUTH__ENABLED".to_owned()]);
}
