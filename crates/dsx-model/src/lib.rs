//! Wire models shared by dsx-connect and its connectors (field names and enum spellings
//! match the Python 1.x models; unknown fields are ignored on input, except in stored
//! results, which keep them so they are served as stored).

#![forbid(unsafe_code)]

mod connector;
mod nulls;
mod pipeline;
mod responses;
mod result;
mod scan;
mod validate;
mod verdict;

pub use connector::{Connector, ConnectorStatus, ItemAction};
pub use pipeline::FailureClass;
pub use responses::{AuthCheckResponse, ErrorBody, RegistrationResponse, StatusKind, StatusResponse, TokenResponse};
pub use result::{ResultVerdict, StoredResult, Timings};
pub use scan::{
    Destination, Estimate, ItemActionStatusResponse, ItemVersion, RequestedAction, ScanRequest, ScanRequestBatch,
};
pub use validate::{parse_json, FieldError};
pub use verdict::{FileInfo, ThreatType, Verdict, VerdictDetails, VerdictKind};

/// Route prefix of the dsx-connect API.
pub const API_PREFIX: &str = "/dsx-connect/api/v1";
