//! Scanners for dsx-connect.
//!
//! * [`DsxaClient`] talks to a DSXA scanner over `POST {base}/scan/binary/v2`.
//! * [`BuiltinScanner`] is an in-process engine (EICAR + SHA-256 blocklist), also
//!   exposed on the same HTTP API by [`router`]/[`serve`] so it can stand in for DSXA.
//!
//! File bodies are always [`ByteStream`]s and are never collected into memory.

#![forbid(unsafe_code)]

mod builtin;
mod client;
mod error;
mod server;
mod verdict;

use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;

pub use builtin::{parse_blocklist, BlocklistError, BuiltinScanner, EICAR, EICAR_SCAN_LIMIT};
pub use client::{custom_metadata_header, DsxaClient, DsxaConfig, SCAN_BINARY_PATH};
pub use error::ScanError;
pub use server::{router, serve};
pub use verdict::{FileInfo, ThreatType, Verdict, VerdictDetails, VerdictKind};

/// A file body streamed from a connector.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send>>;

/// What the scanner is told about the file besides its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanInput {
    pub location: String,
    pub metainfo: String,
    pub connector_name: String,
    pub task_id: String,
    /// Informational only: the body is sent chunked, so this is not a Content-Length.
    pub size: Option<u64>,
    pub protected_entity: Option<String>,
}

#[async_trait]
pub trait Scanner: Send + Sync {
    async fn scan(&self, input: &ScanInput, body: ByteStream) -> Result<Verdict, ScanError>;
    fn kind(&self) -> &'static str;
    async fn check(&self) -> Result<(), ScanError>;
}
