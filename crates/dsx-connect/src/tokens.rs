//! Enrollment and operator token sets: merged from env values and mounted files, compared
//! in constant time on SHA-256 digests (H9), re-read on change or SIGHUP (rotation without
//! restart).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Where tokens come from. `Debug` prints slot names and file paths, never tokens.
#[derive(Clone, Default)]
pub struct TokenSources {
    inline: Vec<(String, SecretString)>,
    files: Vec<PathBuf>,
}

impl std::fmt::Debug for TokenSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots: Vec<_> = self.inline.iter().map(|(slot, _)| slot.as_str()).collect();
        f.debug_struct("TokenSources").field("inline", &slots).field("files", &self.files).finish()
    }
}

impl TokenSources {
    /// Merge `single` (one token), `list` (comma-separated, trimmed, empties dropped),
    /// `file` and `files` (comma-separated paths; one token per line).
    pub fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        single: &str,
        list: &str,
        file: &str,
        files: &str,
    ) -> Self {
        let mut inline = Vec::new();
        if let Some(t) = get(single) {
            inline.push((single.to_owned(), SecretString::from(t)));
        }
        if let Some(csv) = get(list) {
            let items = csv.split(',').map(str::trim).filter(|t| !t.is_empty());
            for (i, t) in items.enumerate() {
                inline.push((format!("{list}[{i}]"), SecretString::from(t.to_owned())));
            }
        }
        let files = [get(file), get(files)]
            .into_iter()
            .flatten()
            .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()).collect::<Vec<_>>())
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        Self { inline, files }
    }

    pub fn has_files(&self) -> bool {
        !self.files.is_empty()
    }

    /// Read every source now. Unreadable files are reported (without their content).
    pub fn try_load(&self) -> Result<TokenSet, String> {
        let mut entries: Vec<TokenEntry> =
            self.inline.iter().map(|(slot, t)| TokenEntry::new(slot.clone(), t.expose_secret())).collect();
        for path in &self.files {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
            let lines = text.lines().enumerate().map(|(n, l)| (n, l.trim()));
            for (n, token) in lines.filter(|(_, l)| !l.is_empty() && !l.starts_with('#')) {
                entries.push(TokenEntry::new(format!("file:{}#{}", path.display(), n + 1), token));
            }
        }
        Ok(TokenSet { entries })
    }

    /// Like `try_load`, treating unreadable files as contributing nothing.
    pub fn load(&self) -> TokenSet {
        self.try_load().unwrap_or_else(|err| {
            tracing::error!("{err}");
            let mut readable = self.clone();
            readable.files.retain(|p| std::fs::metadata(p).is_ok());
            readable.try_load().unwrap_or_default()
        })
    }
}

struct TokenEntry {
    digest: [u8; 32],
    slot: String,
}

impl TokenEntry {
    fn new(slot: String, token: &str) -> Self {
        Self { digest: Sha256::digest(token.as_bytes()).into(), slot }
    }
}

/// A loaded set of token digests.
#[derive(Default)]
pub struct TokenSet {
    entries: Vec<TokenEntry>,
}

impl TokenSet {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The slot name of the matching token. Every entry is compared (no early exit) on
    /// fixed-length digests, so timing reveals neither the token nor how close a guess was.
    pub fn matches(&self, presented: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&digest)) && found.is_none() {
                found = Some(entry.slot.as_str());
            }
        }
        found
    }

    fn fingerprint(&self) -> Vec<[u8; 32]> {
        self.entries.iter().map(|e| e.digest).collect()
    }
}

/// A token set kept current: files are re-read every few seconds and on SIGHUP.
pub struct LiveTokens {
    name: &'static str,
    sources: TokenSources,
    current: ArcSwap<TokenSet>,
}

impl LiveTokens {
    pub fn new(name: &'static str, sources: TokenSources) -> Result<Arc<Self>, String> {
        let set = sources.try_load()?;
        Ok(Arc::new(Self { name, sources, current: ArcSwap::from_pointee(set) }))
    }

    pub fn matches(&self, presented: &str) -> Option<String> {
        self.current.load().matches(presented).map(str::to_owned)
    }

    pub fn len(&self) -> usize {
        self.current.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-read the sources; swap in and log when the set changed.
    pub fn reload(&self) {
        let fresh = self.sources.load();
        if fresh.fingerprint() != self.current.load().fingerprint() {
            tracing::info!(tokens = fresh.len(), "{} tokens reloaded", self.name);
            if fresh.is_empty() {
                tracing::error!("{} token set is now empty: every request that needs one will be refused", self.name);
            }
            self.current.store(Arc::new(fresh));
        }
    }

    /// Keep reloading in the background (only useful when tokens come from files).
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) {
        if !self.sources.has_files() {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(every);
            loop {
                #[cfg(unix)]
                {
                    let hup_fut = async {
                        match hup.as_mut() {
                            Some(s) => s.recv().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! { _ = tick.tick() => {}, _ = hup_fut => tracing::info!("SIGHUP: re-reading {} tokens", this.name) }
                }
                #[cfg(not(unix))]
                tick.tick().await;
                this.reload();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn sources(pairs: &[(&str, &str)]) -> TokenSources {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TokenSources::from_lookup(&|k: &str| map.get(k).cloned(), "ONE", "MANY", "FILE", "FILES")
    }

    #[test]
    fn merges_all_sources_with_slot_names() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tokens");
        std::fs::write(&f, "file-a\n\n# comment\n  file-b  \n").unwrap();
        let s = sources(&[("ONE", "single"), ("MANY", " x , ,y "), ("FILE", f.to_str().unwrap())]);
        let set = s.try_load().unwrap();
        assert_eq!(set.len(), 5);
        assert_eq!(set.matches("single"), Some("ONE"));
        assert_eq!(set.matches("y"), Some("MANY[1]"));
        assert_eq!(set.matches("file-b"), Some(format!("file:{}#4", f.display()).as_str()));
        assert_eq!(set.matches("file-b "), None);
        assert_eq!(set.matches(""), None);
        assert_eq!(set.matches("dev-enroll"), None, "no built-in default token (H2)");
    }

    #[test]
    fn debug_never_shows_tokens() {
        let s = sources(&[("ONE", "supersecret")]);
        assert!(!format!("{s:?}").contains("supersecret"));
    }

    #[test]
    fn missing_file_is_an_error_naming_the_path() {
        let s = sources(&[("FILE", "/nonexistent/tok")]);
        let err = s.try_load().err().unwrap();
        assert!(err.contains("/nonexistent/tok"), "{err}");
    }

    #[test]
    fn reload_picks_up_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tokens");
        std::fs::write(&f, "old\n").unwrap();
        let live = LiveTokens::new("enrollment", sources(&[("FILE", f.to_str().unwrap())])).unwrap();
        assert!(live.matches("old").is_some());
        std::fs::write(&f, "old\nnew\n").unwrap();
        live.reload();
        assert!(live.matches("new").is_some() && live.matches("old").is_some());
        std::fs::write(&f, "new\n").unwrap();
        live.reload();
        assert!(live.matches("old").is_none());
        // A vanished file keeps nothing from it, and does not panic.
        std::fs::remove_file(&f).unwrap();
        live.reload();
        assert!(live.is_empty());
    }
}
