use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use async_trait::async_trait;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::{ByteStream, ScanError, ScanInput, Scanner, ThreatType, Verdict, VerdictKind};

/// The standard 68-byte EICAR test string.
pub const EICAR: &[u8; 68] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// EICAR is detected when the whole signature lies within the first this-many bytes of the file.
pub const EICAR_SCAN_LIMIT: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BlocklistError {
    #[error("reading blocklist {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("blocklist line {line}: {entry:?} is not a 64-hex-digit SHA-256")]
    BadEntry { line: usize, entry: String },
}

/// Parses a blocklist: one hex SHA-256 per line (any case); `#` starts a comment; blank lines ignored.
pub fn parse_blocklist(text: &str) -> Result<HashSet<[u8; 32]>, BlocklistError> {
    let mut set = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let entry = raw.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let mut digest = [0u8; 32];
        hex::decode_to_slice(entry, &mut digest)
            .map_err(|_| BlocklistError::BadEntry { line: i + 1, entry: entry.to_string() })?;
        set.insert(digest);
    }
    Ok(set)
}

/// In-process engine: EICAR signature in the first [`EICAR_SCAN_LIMIT`] bytes, or a SHA-256 blocklist hit,
/// is `Malicious`; anything else is `Benign`. Memory use is constant in the file size.
#[derive(Debug, Default, Clone)]
pub struct BuiltinScanner {
    blocklist: HashSet<[u8; 32]>,
}

impl BuiltinScanner {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_blocklist(hashes: impl IntoIterator<Item = [u8; 32]>) -> Self {
        BuiltinScanner { blocklist: hashes.into_iter().collect() }
    }

    pub fn with_blocklist_file(path: impl AsRef<Path>) -> Result<Self, BlocklistError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| BlocklistError::Io { path: path.to_path_buf(), source })?;
        Ok(BuiltinScanner { blocklist: parse_blocklist(&text)? })
    }

    pub fn blocklist_len(&self) -> usize {
        self.blocklist.len()
    }
}

/// Finds EICAR across chunk boundaries, keeping only the last 67 bytes between chunks.
#[derive(Default)]
struct EicarWindow {
    carry: Vec<u8>,
    seen: u64,
    found: bool,
}

impl EicarWindow {
    fn feed(&mut self, chunk: &[u8]) {
        if !self.found && self.seen < EICAR_SCAN_LIMIT {
            let chunk = &chunk[..chunk.len().min((EICAR_SCAN_LIMIT - self.seen) as usize)];
            let overlap = EICAR.len() - 1;
            // memmem (SIMD) over the chunk in place, plus the seam with the previous chunk's
            // tail: a compare per byte offset over a copied window cost a tenth of
            // dsx-connect's CPU per small file.
            let mut seam = std::mem::take(&mut self.carry);
            seam.extend_from_slice(&chunk[..chunk.len().min(overlap)]);
            static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
                std::sync::LazyLock::new(|| memchr::memmem::Finder::new(EICAR));
            self.found = FINDER.find(&seam).is_some() || FINDER.find(chunk).is_some();
            if !self.found {
                // The last `overlap` bytes seen so far start the next seam (the buffer is reused).
                if chunk.len() >= overlap {
                    seam.clear();
                    seam.extend_from_slice(&chunk[chunk.len() - overlap..]);
                } else {
                    // The seam holds the old tail and this whole chunk.
                    seam.drain(..seam.len().saturating_sub(overlap));
                }
                self.carry = seam;
            }
        }
        self.seen += chunk.len() as u64;
    }
}

#[async_trait]
impl Scanner for BuiltinScanner {
    async fn scan(&self, input: &ScanInput, mut body: ByteStream) -> Result<Verdict, ScanError> {
        let started = Instant::now();
        let mut hasher = Sha256::new();
        let mut eicar = EicarWindow::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ScanError::Body(e.to_string()))?;
            hasher.update(&chunk);
            eicar.feed(&chunk);
        }
        let digest: [u8; 32] = hasher.finalize().into();

        let mut v = if eicar.found {
            let mut v = Verdict::new(VerdictKind::Malicious);
            v.verdict_details.threat_type = Some(ThreatType::Virus);
            v.verdict_details.reason = Some("EICAR test file".into());
            v
        } else if self.blocklist.contains(&digest) {
            let mut v = Verdict::new(VerdictKind::Malicious);
            v.verdict_details.reason = Some("SHA-256 blocklist".into());
            v
        } else {
            Verdict::new(VerdictKind::Benign)
        };
        v.verdict_details.event_description =
            Some(if v.is_malicious() { "File identified as malicious" } else { "File identified as benign" }.into());
        v.scan_guid = uuid::Uuid::new_v4().simple().to_string();
        v.file_info.file_size_in_bytes = Some(eicar.seen);
        v.file_info.file_hash = Some(hex::encode(digest));
        v.protected_entity = input.protected_entity.as_deref().and_then(|p| p.trim().parse().ok());
        v.scan_duration_in_microseconds = Some(started.elapsed().as_micros() as u64);
        Ok(v)
    }

    fn kind(&self) -> &'static str {
        "builtin"
    }

    async fn check(&self) -> Result<(), ScanError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn chunked(data: &[u8], size: usize) -> ByteStream {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            data.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        Box::pin(futures_util::stream::iter(chunks))
    }

    async fn scan(s: &BuiltinScanner, data: &[u8], size: usize) -> Verdict {
        s.scan(&ScanInput::default(), chunked(data, size)).await.unwrap()
    }

    #[tokio::test]
    async fn eicar_across_chunk_boundaries() {
        let s = BuiltinScanner::new();
        let mut data = b"some prefix bytes ".to_vec();
        data.extend_from_slice(EICAR);
        data.extend_from_slice(b"\r\n trailer");
        for size in (1..=140).chain([data.len()]) {
            let v = scan(&s, &data, size).await;
            assert_eq!(v.verdict, VerdictKind::Malicious, "chunk size {size}");
            assert_eq!(v.verdict_details.threat_type, Some(ThreatType::Virus));
            assert_eq!(v.verdict_details.reason.as_deref(), Some("EICAR test file"));
            assert_eq!(v.file_info.file_size_in_bytes, Some(data.len() as u64));
            assert_eq!(v.file_info.file_hash, Some(hex::encode(Sha256::digest(&data))));
        }
        // Exact file, and the signature ending exactly at the scan limit.
        assert!(scan(&s, EICAR, 1).await.is_malicious());
        let mut edge = vec![b'a'; EICAR_SCAN_LIMIT as usize - EICAR.len()];
        edge.extend_from_slice(EICAR);
        assert!(scan(&s, &edge, 7).await.is_malicious());
    }

    #[tokio::test]
    async fn eicar_beyond_limit_or_broken_is_benign() {
        let s = BuiltinScanner::new();
        let mut late = vec![b'a'; EICAR_SCAN_LIMIT as usize - EICAR.len() + 1];
        late.extend_from_slice(EICAR);
        assert_eq!(scan(&s, &late, 4096).await.verdict, VerdictKind::Benign);
        let broken = &EICAR[..67];
        let v = scan(&s, broken, 1).await;
        assert_eq!(v.verdict, VerdictKind::Benign);
        assert_eq!(v.verdict_details.threat_type, None);
        assert_eq!(v.file_info.file_size_in_bytes, Some(67));
        assert_eq!(v.scan_guid.len(), 32);
    }

    #[test]
    fn blocklist_parsing() {
        let a = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let text = format!("# comment\n\n  {a}  \n{}  # trailing comment\n", "AB".repeat(32));
        let set = parse_blocklist(&text).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.contains(&[0xab; 32]));

        let err = parse_blocklist(&format!("{a}\n# ok\nnot-a-hash\n")).unwrap_err();
        assert!(matches!(&err, BlocklistError::BadEntry { line: 3, entry } if entry == "not-a-hash"), "{err}");
        assert!(err.to_string().contains("line 3"));
        // Wrong length is rejected too.
        assert!(matches!(parse_blocklist(&a[..62]), Err(BlocklistError::BadEntry { line: 1, .. })));
    }

    #[tokio::test]
    async fn blocklist_file_matches() {
        let data = b"a perfectly ordinary file";
        let hash = hex::encode_upper(Sha256::digest(data));
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, format!("# blocked\n{hash}\n").as_bytes()).unwrap();
        let s = BuiltinScanner::with_blocklist_file(f.path()).unwrap();
        assert_eq!(s.blocklist_len(), 1);
        let v = scan(&s, data, 3).await;
        assert!(v.is_malicious());
        assert_eq!(v.verdict_details.reason.as_deref(), Some("SHA-256 blocklist"));
        assert_eq!(scan(&s, b"something else", 3).await.verdict, VerdictKind::Benign);

        let missing = BuiltinScanner::with_blocklist_file("/nonexistent/blocklist.txt").unwrap_err();
        assert!(matches!(missing, BlocklistError::Io { .. }));
    }

    #[tokio::test]
    async fn source_stream_failure_is_body_error() {
        let s = BuiltinScanner::new();
        let body: ByteStream = Box::pin(futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("disk gone")),
        ]));
        let err = s.scan(&ScanInput::default(), body).await.unwrap_err();
        assert!(matches!(&err, ScanError::Body(m) if m.contains("disk gone")));
        assert_eq!(err.class(), "connector_read");
    }
}
