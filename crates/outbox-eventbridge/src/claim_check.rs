//! Claim-checks: a record too large for a queue message is stored as an S3
//! object, and the message carries the object's address instead (the
//! pattern AWS recommends for EventBridge entries over 256 KB).

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use chrono::{DateTime, Utc};
pub use outbox_core::ClaimCheck;

/// A claim-check store could not store or read back a record.
#[derive(Debug, thiserror::Error)]
#[error("{operation} of s3://{bucket}/{key} failed")]
pub struct ClaimCheckError {
    operation: &'static str,
    bucket: String,
    key: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// Stores records in an S3 bucket, one object per record, encrypted at rest
/// (SSE-S3), under `<prefix><yyyy>/<mm>/<dd>/<uuid>.json`. The bucket's
/// lifecycle rule (see the templates) decides how long they are kept.
#[derive(Debug, Clone)]
pub struct S3ClaimCheck {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

/// The key prefix unless [`S3ClaimCheck::with_prefix`] sets another.
pub const DEFAULT_CLAIM_CHECK_PREFIX: &str = "outbox/";

impl S3ClaimCheck {
    /// A store in `bucket`, written with `client`.
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            prefix: DEFAULT_CLAIM_CHECK_PREFIX.to_owned(),
        }
    }

    /// Puts the objects under `prefix` instead of [`DEFAULT_CLAIM_CHECK_PREFIX`].
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Stores `body` (JSON text) as a new object, written at `at`.
    pub async fn store(&self, body: String, at: DateTime<Utc>) -> Result<ClaimCheck, ClaimCheckError> {
        let name = format!("{}/{}.json", at.format("%Y/%m/%d"), uuid::Uuid::now_v7());
        self.store_as(&name, body).await
    }

    /// The object key of `name`: the prefix, then the name.
    pub fn key_for(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Stores `body` (JSON text) under `name` (after the prefix), replacing
    /// what is there: storing the same thing again is harmless.
    pub async fn store_as(&self, name: &str, body: String) -> Result<ClaimCheck, ClaimCheckError> {
        let key = self.key_for(name);
        let bytes = body.len();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .server_side_encryption(ServerSideEncryption::Aes256)
            .body(ByteStream::from(body.into_bytes()))
            .send()
            .await
            .map_err(|error| ClaimCheckError {
                operation: "PutObject",
                bucket: self.bucket.clone(),
                key: key.clone(),
                source: Box::new(error),
            })?;
        Ok(ClaimCheck::new(self.bucket.clone(), key, bytes))
    }
}

/// Reads a stored record back as text, with `client`.
pub(crate) async fn fetch(
    client: &aws_sdk_s3::Client,
    check: &ClaimCheck,
) -> Result<String, ClaimCheckError> {
    let error = |operation, source: Box<dyn std::error::Error + Send + Sync>| ClaimCheckError {
        operation,
        bucket: check.bucket.clone(),
        key: check.key.clone(),
        source,
    };
    let object = client
        .get_object()
        .bucket(&check.bucket)
        .key(&check.key)
        .send()
        .await
        .map_err(|e| error("GetObject", Box::new(e)))?;
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| error("reading", Box::new(e)))?
        .into_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|e| error("decoding", Box::new(e)))
}
