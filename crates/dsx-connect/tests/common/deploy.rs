//! Helpers shared by the deploy-file tests (Compose files, Helm charts): where the repository
//! is, and whether an environment variable name is one the code actually reads.
//! Included with `#[path = "common/deploy.rs"] mod deploy;` (it needs none of the e2e harness).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every Rust source under crates/ and connectors/ (tests excluded), concatenated.
pub fn sources() -> String {
    let mut out = String::new();
    let mut stack = vec![repo().join("crates"), repo().join("connectors")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.ends_with("target") {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.to_string_lossy().contains("/tests/") {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    out
}

/// A variable the code reads: named literally (`"DSXCONNECT_AUTH__ENABLED"`, clap's `env = "…"`),
/// as a connector setting (`var("NAME")`, `bool_var("MONITOR", …)`, `num_var(…)` behind the
/// `DSXCONNECTOR_` prefix), or as a logging setting (`init_logging("DSXCONNECT")` reads
/// `{prefix}_LOG_LEVEL` and `{prefix}_LOG_FORMAT`).
pub fn known(sources: &str, var: &str) -> bool {
    let literal = sources.contains(&format!("\"{var}\""));
    let connector = var.strip_prefix("DSXCONNECTOR_").is_some_and(|rest| {
        ["var", "bool_var", "num_var"].iter().any(|f| sources.contains(&format!("{f}(\"{rest}\"")))
    });
    let logging = ["_LOG_LEVEL", "_LOG_FORMAT"].iter().any(|suffix| {
        var.strip_suffix(suffix).is_some_and(|prefix| {
            sources.contains(&format!("init_logging(\"{prefix}\")")) && sources.contains(&format!("{{prefix}}{suffix}"))
        })
    });
    literal || connector || logging
}

/// Every `DSXCONNECT_…`/`DSXCONNECTOR_…` name inside `text` (maximal runs of `[A-Z0-9_]`).
pub fn variable_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("DSXCONNECT") {
        let tail = &rest[at..];
        let end =
            tail.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        // A name ending in `_` is a prefix in prose (`DSXCONNECT_AUTH__*`), not a variable.
        if (name.starts_with("DSXCONNECT_") || name.starts_with("DSXCONNECTOR_")) && !name.ends_with('_') {
            out.push(name.to_owned());
        }
        rest = &tail[end.max(1)..];
    }
    out
}

#[test]
fn known_recognises_each_way_code_reads_a_variable() {
    let code = r#"get("DSXCONNECT_AUTH__ENABLED"); var("ASSET"); bool_var("MONITOR", false); num_var("PORT", 1);
        init_logging("DSXCONNECT"); format!("{prefix}_LOG_LEVEL")"#;
    for var in ["DSXCONNECT_AUTH__ENABLED", "DSXCONNECTOR_ASSET", "DSXCONNECTOR_MONITOR", "DSXCONNECT_LOG_LEVEL"] {
        assert!(known(code, var), "{var}");
    }
    for var in ["DSXCONNECT_AUTH__ENABLE", "DSXCONNECTOR_ASSETS", "DSXCONNECT_LOG_FORMAT", "DSXCONNECTOR_LOG_LEVEL"] {
        assert!(!known(code, var), "{var}");
    }
    assert_eq!(
        variable_names("x DSXCONNECT_A__B=1,$(DSXCONNECTOR_C) DSXCONNECTX"),
        ["DSXCONNECT_A__B", "DSXCONNECTOR_C"]
    );
}
