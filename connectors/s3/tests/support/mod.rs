//! Shared by the S3 tests: a moto server, buckets with unique names, the repository under
//! test built exactly as the binary builds it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, StorageClass, VersioningConfiguration};
use dsx_connector::{Item, Repository};
use dsx_filter::Filter;
use dsx_testkit::{unique_name, Moto};
use s3_connector::{S3Repo, S3Settings};

pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// The SDK's credential chain reads the environment: point it at moto's throwaway keys
/// (and away from any real profile or instance role) once per test binary.
pub fn aws_env(moto: &Moto) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (k, v) in moto.env() {
            if k.starts_with("AWS_") {
                std::env::set_var(k, v);
            }
        }
    });
}

pub struct Fixture {
    pub moto: Moto,
    pub bucket: String,
    pub repo: S3Repo,
    pub s3: aws_sdk_s3::Client,
    pub sqs: Option<aws_sdk_sqs::Client>,
}

pub fn bucket_name() -> String {
    unique_name("dsx-test-")
}

/// A fresh bucket (versioned or not) and a repository scanning `asset_suffix` of it.
pub async fn fixture(versioned: bool, asset_suffix: &str, extra: &[(&str, &str)]) -> Fixture {
    fixture_on(Moto::get(), versioned, asset_suffix, extra).await
}

pub async fn fixture_on(moto: Moto, versioned: bool, asset_suffix: &str, extra: &[(&str, &str)]) -> Fixture {
    aws_env(&moto);
    let bucket = bucket_name();
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("DSXCONNECTOR_S3_ENDPOINT_URL".into(), moto.endpoint.clone());
    vars.insert("AWS_REGION".into(), "us-east-1".into());
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    let quarantine = vars.remove("QUARANTINE").unwrap_or_else(|| "dsxconnect-quarantine".into());
    let settings =
        S3Settings::from_lookup(&format!("{bucket}{asset_suffix}"), &quarantine, |k| vars.get(k).cloned()).unwrap();
    let (s3, sqs) = s3_connector::build_clients(&settings).await.unwrap();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    if versioned {
        s3.put_bucket_versioning()
            .bucket(&bucket)
            .versioning_configuration(
                VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build(),
            )
            .send()
            .await
            .unwrap();
    }
    let repo = S3Repo::new(settings).await.unwrap();
    Fixture { moto, bucket, repo, s3, sqs }
}

impl Fixture {
    pub async fn put(&self, key: &str, body: &[u8]) -> (String, Option<String>) {
        self.put_in(&self.bucket, key, body, None).await
    }

    pub async fn put_in(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        class: Option<StorageClass>,
    ) -> (String, Option<String>) {
        let out = self
            .s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .set_storage_class(class)
            .send()
            .await
            .unwrap();
        (out.e_tag().unwrap().to_owned(), out.version_id().map(str::to_owned))
    }

    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.get_in(&self.bucket, key).await
    }

    pub async fn get_in(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let out = self.s3.get_object().bucket(bucket).key(key).send().await.ok()?;
        Some(out.body.collect().await.unwrap().into_bytes().to_vec())
    }

    pub async fn tags(&self, key: &str) -> HashMap<String, String> {
        let out = self.s3.get_object_tagging().bucket(&self.bucket).key(key).send().await.unwrap();
        out.tag_set().iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect()
    }

    pub async fn list(&self, filter: &str) -> Vec<Item> {
        let mut rx = self.repo.enumerate(Arc::new(Filter::parse(filter).unwrap()));
        let mut items = Vec::new();
        while let Some(next) = rx.recv().await {
            items.push(next.expect("listing error"));
        }
        items
    }

    pub async fn listed(&self, key: &str) -> Item {
        self.list("").await.into_iter().find(|i| i.location == key).unwrap_or_else(|| panic!("{key} not listed"))
    }
}
