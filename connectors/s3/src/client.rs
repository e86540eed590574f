//! The SDK clients: the standard AWS credential chain and region (environment, profiles, web
//! identity/IRSA, container and instance metadata), HTTPS through rustls with the ring
//! provider, and path-style addressing when an endpoint is set (S3-compatible stores).

use anyhow::Context;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};

use crate::settings::{S3Settings, Verify};

/// Region when nothing configures one and an endpoint is set (S3-compatible stores ignore it,
/// but requests must be signed for some region).
const FALLBACK_REGION: &str = "us-east-1";

pub async fn build_clients(cfg: &S3Settings) -> anyhow::Result<(aws_sdk_s3::Client, Option<aws_sdk_sqs::Client>)> {
    let mut trust = TrustStore::default();
    if let Verify::CaBundle(path) = &cfg.verify {
        let pem =
            std::fs::read(path).with_context(|| format!("DSXCONNECTOR_S3_ENDPOINT_VERIFY: read {}", path.display()))?;
        trust = trust.with_pem_certificate(pem);
    }
    let tls_context = TlsContext::builder().with_trust_store(trust).build().context("TLS settings")?;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls_context)
        .build_https();
    // The loader's own region chain (environment, profile, instance metadata) uses this
    // HTTP client; a chain built here would not.
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = &cfg.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let mut shared = loader.load().await;
    if shared.region().is_none() {
        shared = shared.into_builder().region(Region::new(FALLBACK_REGION)).build();
    }

    let mut s3 = aws_sdk_s3::config::Builder::from(&shared);
    if let Some(endpoint) = &cfg.endpoint_url {
        s3 = s3.endpoint_url(endpoint).force_path_style(true);
    }
    let sqs = cfg.sqs_queue_url.as_ref().map(|_| {
        let mut b = aws_sdk_sqs::config::Builder::from(&shared);
        if let Some(endpoint) = &cfg.endpoint_url {
            b = b.endpoint_url(endpoint);
        }
        aws_sdk_sqs::Client::from_conf(b.build())
    });
    Ok((aws_sdk_s3::Client::from_conf(s3.build()), sqs))
}
