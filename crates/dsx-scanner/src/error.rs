/// Why a scan did not produce a verdict. Retrying is the caller's job; see [`ScanError::is_retryable`].
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("scanner rejected credentials: {0}")]
    Auth(String),
    #[error("scanner rejected request (HTTP {0}): {1}")]
    Client(u16, String),
    #[error("scanner server error (HTTP {0}): {1}")]
    Server(u16, String),
    #[error("scanner timed out: {0}")]
    Timeout(String),
    #[error("scanner unreachable: {0}")]
    Unreachable(String),
    #[error("scanner is initializing: {0}")]
    Initializing(String),
    #[error("scanner protocol error: {0}")]
    Protocol(String),
    /// The source (connector) stream failed while being read.
    #[error("reading file from connector failed: {0}")]
    Body(String),
}

impl ScanError {
    /// Transient conditions: 5xx, timeouts, connection failures, scanner warm-up, and a
    /// failed source read (connector hiccups are usually transient).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ScanError::Server(..)
                | ScanError::Timeout(_)
                | ScanError::Unreachable(_)
                | ScanError::Initializing(_)
                | ScanError::Body(_)
        )
    }

    /// Stable label for metrics and stored failure records.
    pub fn class(&self) -> &'static str {
        match self {
            ScanError::Auth(_) => "scanner_auth",
            ScanError::Client(..) => "scanner_client",
            ScanError::Server(..) => "scanner_server",
            ScanError::Timeout(_) => "scanner_timeout",
            ScanError::Unreachable(_) => "scanner_unreachable",
            ScanError::Initializing(_) => "scanner_initializing",
            ScanError::Protocol(_) => "scanner_protocol",
            ScanError::Body(_) => "connector_read",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_and_class() {
        let cases = [
            (ScanError::Auth("x".into()), false, "scanner_auth"),
            (ScanError::Client(400, "x".into()), false, "scanner_client"),
            (ScanError::Server(503, "x".into()), true, "scanner_server"),
            (ScanError::Timeout("x".into()), true, "scanner_timeout"),
            (ScanError::Unreachable("x".into()), true, "scanner_unreachable"),
            (ScanError::Initializing("x".into()), true, "scanner_initializing"),
            (ScanError::Protocol("x".into()), false, "scanner_protocol"),
            (ScanError::Body("x".into()), true, "connector_read"),
        ];
        for (e, retry, class) in cases {
            assert_eq!(e.is_retryable(), retry, "{e}");
            assert_eq!(e.class(), class);
        }
    }
}
