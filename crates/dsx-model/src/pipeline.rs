//! Typed data of the scan pipeline that is not on the wire as such: why a task failed.

use serde::{Deserialize, Serialize};

/// Why a scan task failed. Its spelling (`as_str`) starts every dead-letter reason and
/// labels the failure metrics, so it is stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The queued request cannot be processed at all (unreadable, invalid).
    Validation,
    /// The store did not answer.
    Store,
    /// The task's job is paused: the task waits without spending an attempt.
    JobPaused,
    /// No connection to the connector (refused, reset, timed out).
    ConnectorConnection,
    /// The connector's registered URL is not one dsx-connect may call.
    ConnectorUrlRefused,
    /// The connector is not registered (or holds no key) right now.
    ConnectorNotRegistered,
    /// The connector refused our signature (401/403): usually a key change in progress.
    ConnectorAuth,
    /// The connector asked us to come back later (408/429).
    ConnectorBusy,
    /// The connector failed (5xx).
    ConnectorServer,
    /// The connector refused the request for good (other 4xx, or an error body).
    ConnectorClient,
    /// The connector's byte stream broke while the scanner read it.
    ConnectorRead,
    /// The connector answered `item_action` with a failure.
    ItemAction,
    /// `item_action` could not be delivered.
    ItemActionConnection,
    ScannerAuth,
    ScannerClient,
    ScannerServer,
    ScannerTimeout,
    ScannerUnreachable,
    ScannerInitializing,
    ScannerProtocol,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validation => "validation",
            Self::Store => "store",
            Self::JobPaused => "job_paused",
            Self::ConnectorConnection => "connector_connection",
            Self::ConnectorUrlRefused => "connector_url_refused",
            Self::ConnectorNotRegistered => "connector_not_registered",
            Self::ConnectorAuth => "connector_auth",
            Self::ConnectorBusy => "connector_busy",
            Self::ConnectorServer => "connector_server",
            Self::ConnectorClient => "connector_client",
            Self::ConnectorRead => "connector_read",
            Self::ItemAction => "item_action",
            Self::ItemActionConnection => "item_action_connection",
            Self::ScannerAuth => "scanner_auth",
            Self::ScannerClient => "scanner_client",
            Self::ScannerServer => "scanner_server",
            Self::ScannerTimeout => "scanner_timeout",
            Self::ScannerUnreachable => "scanner_unreachable",
            Self::ScannerInitializing => "scanner_initializing",
            Self::ScannerProtocol => "scanner_protocol",
        }
    }

    /// Whether a later attempt may succeed. `ItemAction` depends on what the connector
    /// reported, so the worker decides that one per answer.
    pub fn retryable(self) -> bool {
        !matches!(
            self,
            Self::Validation
                | Self::ConnectorUrlRefused
                | Self::ConnectorClient
                | Self::ItemAction
                | Self::ScannerAuth
                | Self::ScannerClient
                | Self::ScannerProtocol
        )
    }

    /// The scanner is not there (rather than "this file failed"): feeds the circuit breaker.
    pub fn is_scanner_outage(self) -> bool {
        matches!(self, Self::ScannerUnreachable | Self::ScannerServer | Self::ScannerInitializing)
    }
}

impl std::fmt::Display for FailureClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_matches_serde_and_retry_rules() {
        for (class, retry) in [
            (FailureClass::ConnectorConnection, true),
            (FailureClass::ConnectorAuth, true),
            (FailureClass::ConnectorClient, false),
            (FailureClass::ScannerServer, true),
            (FailureClass::ScannerProtocol, false),
            (FailureClass::Validation, false),
        ] {
            assert_eq!(serde_json::to_value(class).unwrap(), class.as_str());
            assert_eq!(class.retryable(), retry, "{class}");
        }
        assert!(FailureClass::ScannerUnreachable.is_scanner_outage());
        assert!(!FailureClass::ScannerTimeout.is_scanner_outage());
    }
}
