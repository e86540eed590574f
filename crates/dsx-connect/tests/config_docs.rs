//! The docs and the code agree: every configuration variable named in the docs is read by the
//! code, every variable the code reads is documented in docs/configuration.md, and every
//! reference to a doc section (a code comment's `docs/x.md, "Section"`, a Markdown link's
//! `x.md#anchor`) leads to a section that exists.

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

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// A heading as rendered: code marks dropped, links reduced to their text.
fn rendered(heading: &str) -> String {
    let mut out = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let Some((text, after)) = rest[open + 1..].split_once("](") else { break };
        let Some(close) = after.find(')') else { break };
        out.push_str(&rest[..open]);
        out.push_str(text);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out.replace('`', "")
}

/// A doc's section titles: its headings, and the bold lead-ins of its bullets (`- **Nulls.**`).
fn sections(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in doc.lines() {
        let line = line.trim_start();
        if line.starts_with('#') {
            out.push(rendered(line.trim_start_matches('#').trim()));
        } else if let Some(rest) = line.strip_prefix("- **") {
            if let Some(end) = rest.find("**") {
                out.push(rest[..end].trim_end_matches(['.', ':']).to_owned());
            }
        }
    }
    out
}

/// Every `docs/<name>.md` a text names, with the quoted section that follows (`, "Section"`).
fn cited_sections(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("docs/") {
        let rest = &text[i + "docs/".len()..];
        let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')).unwrap_or(rest.len());
        let Some(after) = rest[name_len..].strip_prefix(".md") else { continue };
        let after = after.strip_prefix('`').unwrap_or(after);
        // A section name may run onto the next comment line.
        let section = after
            .strip_prefix(", \"")
            .and_then(|s| s.find('"').map(|end| &s[..end]))
            .map(|s| s.split_whitespace().filter(|w| !w.starts_with("//")).collect::<Vec<_>>().join(" "));
        out.push((format!("{}.md", &rest[..name_len]), section));
    }
    out
}

/// Markdown links to a section: `(x.md#anchor)`, `(docs/x.md#anchor)`, `(#anchor)`.
fn linked_anchors(text: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for piece in text.split("](").skip(1) {
        let Some(target) = piece.split(')').next() else { continue };
        if target.contains("://") {
            continue;
        }
        if let Some((file, anchor)) = target.split_once('#') {
            let file = (!file.is_empty()).then(|| file.rsplit('/').next().unwrap_or(file).to_owned());
            out.push((file, anchor.to_owned()));
        }
    }
    out
}

#[test]
fn every_cited_doc_section_exists() {
    let docs_dir = repo().join("docs");
    let mut sources = vec![repo().join("README.md")];
    for (dir, ext) in
        [("crates", ".rs"), ("connectors", ".rs"), ("docs", ".md"), ("scripts", ".sh"), ("deploy", ".yaml")]
    {
        let root = repo().join(dir);
        if root.exists() {
            files(&root, ext, &mut sources);
        }
    }
    let mut checked = 0;
    let mut broken = Vec::new();
    for path in &sources {
        let text = std::fs::read_to_string(path).unwrap();
        let here = path.display().to_string();
        for (doc, section) in cited_sections(&text) {
            let Ok(doc_text) = std::fs::read_to_string(docs_dir.join(&doc)) else {
                broken.push(format!("{here}: docs/{doc} does not exist"));
                continue;
            };
            if let Some(section) = section {
                checked += 1;
                if !sections(&doc_text).iter().any(|s| s.contains(&section)) {
                    broken.push(format!("{here}: docs/{doc} has no section \"{section}\""));
                }
            }
        }
        if path.extension().is_some_and(|e| e == "md") {
            for (file, anchor) in linked_anchors(&text) {
                let target = match &file {
                    Some(name) if path.starts_with(&docs_dir) || name != "README.md" => docs_dir.join(name),
                    Some(_) => repo().join("README.md"),
                    None => path.clone(),
                };
                let Ok(target_text) = std::fs::read_to_string(&target) else {
                    broken.push(format!("{here}: link to {} (#{anchor}), which does not exist", target.display()));
                    continue;
                };
                checked += 1;
                if !sections(&target_text).iter().any(|s| slug(s) == anchor) {
                    broken.push(format!("{here}: link to {}#{anchor}, which has no such heading", target.display()));
                }
            }
        }
    }
    assert!(checked > 30, "suspiciously few section references found: {checked}");
    assert!(broken.is_empty(), "references to doc sections that do not exist:\n{}", broken.join("\n"));
}

#[test]
fn section_references_are_read_as_written() {
    let text = r#"see docs/wire-protocol.md, "Redis layout" and `docs/operations.md`, "Backups"; docs/a.md."#;
    assert_eq!(
        cited_sections(text),
        vec![
            ("wire-protocol.md".to_owned(), Some("Redis layout".to_owned())),
            ("operations.md".to_owned(), Some("Backups".to_owned())),
            ("a.md".to_owned(), None),
        ]
    );
    assert_eq!(slug("A full disk, and the file's size"), "a-full-disk-and-the-files-size");
    assert_eq!(slug("Connectors (details in connectors.md)"), "connectors-details-in-connectorsmd");
    assert_eq!(
        linked_anchors("[x](pipeline.md#jobs) [y](#tls) [z](https://e.org/#a)"),
        vec![(Some("pipeline.md".to_owned()), "jobs".to_owned()), (None, "tls".to_owned())]
    );
    assert_eq!(
        cited_sections("(docs/wire-protocol.md, \"Connector\n    /// routes\")"),
        vec![("wire-protocol.md".to_owned(), Some("Connector routes".to_owned()))]
    );
    assert_eq!(
        sections(
            "# Title\n- **Nulls.** text\n## `Code` here\n## Connectors (details in [connectors.md](connectors.md))"
        ),
        vec!["Title", "Nulls", "Code here", "Connectors (details in connectors.md)"]
    );
}
