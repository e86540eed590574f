use std::path::{Component, Path, PathBuf};

use dsx_connector::RepoError;

/// The asset root and quarantine folder, and the checks that keep every path inside them.
pub struct Confinement {
    root: PathBuf,
    quarantine: PathBuf,
}

impl Confinement {
    /// `root` must be canonical. `quarantine` is absolute, or relative to the root.
    pub fn new(root: PathBuf, quarantine: &str) -> Self {
        let quarantine = resolve_quarantine(&root, quarantine);
        Self { root, quarantine }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn quarantine(&self) -> &Path {
        &self.quarantine
    }

    pub fn is_quarantine(&self, path: &Path) -> bool {
        path.starts_with(&self.quarantine)
    }

    /// An existing regular file inside the asset named by `location` (absolute, or relative
    /// to the asset). Checked lexically first (no `..`, no absolute path elsewhere), then
    /// after resolving symlinks, so nothing outside is ever opened.
    pub fn resolve_item(&self, location: &str) -> Result<PathBuf, RepoError> {
        let candidate = self.lexically_inside(location, &self.root)?;
        let canonical = candidate.canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RepoError::NotFound(location.to_owned()),
            _ => RepoError::Io(format!("{location}: {e}")),
        })?;
        if !canonical.starts_with(&self.root) {
            return Err(RepoError::Forbidden(format!("{location} resolves outside the asset")));
        }
        if !canonical.is_file() {
            return Err(RepoError::NotFound(format!("{location} is not a file")));
        }
        Ok(canonical)
    }

    /// The quarantine folder for an action: the configured one, or a requested destination.
    /// A requested destination must itself stay inside the asset or the configured quarantine.
    pub fn quarantine_for(&self, requested: &str) -> Result<PathBuf, RepoError> {
        let target = resolve_quarantine(&self.root, requested);
        if target.components().any(|c| c == Component::ParentDir) {
            return Err(RepoError::Forbidden(format!("quarantine {requested} contains '..'")));
        }
        if target.starts_with(&self.quarantine) || target.starts_with(&self.root) {
            Ok(target)
        } else {
            Err(RepoError::Forbidden(format!(
                "quarantine {requested} is outside the asset and the configured quarantine"
            )))
        }
    }

    fn lexically_inside(&self, location: &str, base: &Path) -> Result<PathBuf, RepoError> {
        if location.is_empty() || location.contains('\0') {
            return Err(RepoError::Invalid("location must be a non-empty path".into()));
        }
        let path = Path::new(location);
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(RepoError::Forbidden(format!("{location} contains '..'")));
        }
        let candidate = if path.is_absolute() { path.to_path_buf() } else { base.join(path) };
        if !candidate.starts_with(base) {
            return Err(RepoError::Forbidden(format!("{location} is outside the asset")));
        }
        Ok(candidate)
    }
}

fn resolve_quarantine(root: &Path, quarantine: &str) -> PathBuf {
    let q = Path::new(quarantine);
    let joined = if q.is_absolute() { q.to_path_buf() } else { root.join(q) };
    // Canonicalise the part that exists, so comparisons with canonical item paths work.
    match joined.canonicalize() {
        Ok(c) => c,
        Err(_) => match (joined.parent().and_then(|p| p.canonicalize().ok()), joined.file_name()) {
            (Some(parent), Some(name)) => parent.join(name),
            _ => joined,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, Confinement) {
        let asset = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(asset.path().join("sub")).unwrap();
        std::fs::write(asset.path().join("sub/ok.txt"), b"ok").unwrap();
        std::fs::write(outside.path().join("secret.txt"), b"secret").unwrap();
        let root = asset.path().canonicalize().unwrap();
        (asset, outside, Confinement::new(root, "dsxconnect-quarantine"))
    }

    #[test]
    fn files_inside_resolve() {
        let (asset, _o, c) = setup();
        let abs = asset.path().join("sub/ok.txt");
        assert!(c.resolve_item(abs.to_str().unwrap()).is_ok());
        assert!(c.resolve_item("sub/ok.txt").is_ok());
        assert!(matches!(c.resolve_item("sub/missing.txt"), Err(RepoError::NotFound(_))));
        assert!(matches!(c.resolve_item("sub"), Err(RepoError::NotFound(_))));
    }

    #[test]
    fn traversal_absolute_and_symlink_escapes_are_forbidden() {
        let (asset, outside, c) = setup();
        let traversal = format!("{}/sub/../../etc/passwd", asset.path().display());
        assert!(matches!(c.resolve_item(&traversal), Err(RepoError::Forbidden(_))));
        assert!(matches!(c.resolve_item("../../etc/passwd"), Err(RepoError::Forbidden(_))));
        assert!(matches!(c.resolve_item("/etc/passwd"), Err(RepoError::Forbidden(_))));
        assert!(matches!(c.resolve_item("/etc/does-not-exist"), Err(RepoError::Forbidden(_))));
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), asset.path().join("link.txt")).unwrap();
        assert!(matches!(c.resolve_item("link.txt"), Err(RepoError::Forbidden(_))));
        std::os::unix::fs::symlink(outside.path(), asset.path().join("linkdir")).unwrap();
        assert!(matches!(c.resolve_item("linkdir/secret.txt"), Err(RepoError::Forbidden(_))));
        assert!(matches!(c.resolve_item(""), Err(RepoError::Invalid(_))));
    }

    #[test]
    fn quarantine_destinations_are_confined() {
        let (asset, _o, c) = setup();
        assert!(c.quarantine_for("dsxconnect-quarantine").is_ok());
        assert!(c.quarantine_for(asset.path().join("q2").to_str().unwrap()).is_ok());
        assert!(matches!(c.quarantine_for("/tmp/elsewhere-q"), Err(RepoError::Forbidden(_))));
        assert!(matches!(c.quarantine_for("../escape"), Err(RepoError::Forbidden(_))));
    }
}
