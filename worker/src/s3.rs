//! The object store on Amazon S3 (or anything that speaks its API, such as moto).

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use bytes::Bytes;
use shared::S3Uri;
use shared::aws_error::AwsError;

use crate::store::{GetRequest, ListedObject, ObjectBody, ObjectStore, StoreError};

/// An S3 client for `sdk`.
///
/// - Path-style addressing when an endpoint override (a local stand-in) is set: such servers do
///   not serve buckets by host name.
/// - The SDK's own response-checksum validation is off: it cannot check objects uploaded in
///   parts and says so in a warning on every read of one. [`crate::transfer`] checks every
///   download against its ETag instead, where that is an MD5.
pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let mut s3 = aws_sdk_s3::config::Builder::from(sdk)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired);
    if sdk.endpoint_url().is_some() {
        s3 = s3.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(s3.build())
}

/// The worker's S3 access.
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client) -> Self {
        Self { client }
    }

    /// S3 as the environment configures it (credentials, region, `AWS_ENDPOINT_URL`).
    pub async fn from_environment() -> Self {
        Self::new(s3_client(&aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await))
    }
}

/// A key as `x-amz-copy-source` wants it: URL-encoded, its slashes kept.
fn encode_key(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An ETag as HTTP's `If-Match` wants it: in double quotes (events carry it without).
fn quoted(etag: &str) -> String {
    format!("\"{}\"", etag.trim_matches('"'))
}

fn failed<E>(
    operation: &'static str,
    uri: &S3Uri,
) -> impl FnOnce(aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> StoreError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let uri = uri.to_string();
    move |error| AwsError::from_sdk("S3", operation, error).on(uri)
}

impl ObjectStore for S3Store {
    async fn get(&self, request: &GetRequest) -> Result<ObjectBody, StoreError> {
        let uri = &request.uri;
        let response = self
            .client
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .set_if_match(request.if_match.as_deref().map(quoted))
            .set_version_id(request.version_id.clone())
            .set_part_number(request.part_number.map(|n| n as i32))
            .set_range(match (request.range_start, request.range_end) {
                (0, None) => None,
                (start, None) => Some(format!("bytes={start}-")),
                (start, Some(end)) => Some(format!("bytes={start}-{}", end.saturating_sub(1))),
            })
            .send()
            .await
            .map_err(failed("GetObject", uri))?;
        let etag_is_md5 = !matches!(
            response.server_side_encryption(),
            Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
        ) && response.sse_customer_algorithm().is_none();
        Ok(ObjectBody {
            length: response.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            etag: response.e_tag().map(|e| e.trim_matches('"').to_owned()),
            parts_count: response.parts_count().and_then(|n| u32::try_from(n).ok()),
            etag_is_md5,
            body: Box::new(response.body.into_async_read()),
        })
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, StoreError> {
        let mut pages = self.client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| AwsError::from_sdk("S3", "ListObjectsV2", e).on(format!("s3://{bucket}/{prefix}")))?;
            keys.extend(page.contents().iter().filter_map(|o| {
                Some(ListedObject {
                    key: o.key()?.to_owned(),
                    etag: o.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                })
            }));
        }
        Ok(keys)
    }

    async fn head(&self, uri: &S3Uri, if_match: Option<&str>) -> Result<String, StoreError> {
        let response = self
            .client
            .head_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .set_if_match(if_match.map(quoted))
            .send()
            .await
            .map_err(failed("HeadObject", uri))?;
        Ok(response.e_tag().unwrap_or_default().trim_matches('"').to_owned())
    }

    async fn put(&self, uri: &S3Uri, body: Bytes, content_type: &str) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(failed("PutObject", uri))?;
        Ok(())
    }

    async fn put_if_absent(&self, uri: &S3Uri, body: Bytes, content_type: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .content_type(content_type)
            .if_none_match("*")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(failed("PutObject", uri));
        match result {
            Ok(_) => Ok(true),
            Err(error) if error.is_precondition_failed() => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn delete(&self, uri: &S3Uri) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
            .map_err(failed("DeleteObject", uri))?;
        Ok(())
    }

    async fn create_multipart(&self, uri: &S3Uri, content_type: &str) -> Result<String, StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .content_type(content_type)
            .send()
            .await
            .map_err(failed("CreateMultipartUpload", uri))?;
        created.upload_id.ok_or_else(|| {
            AwsError::other("S3", "CreateMultipartUpload", shared::aws_error::AwsErrorKind::Response, "no upload id")
                .on(uri.to_string())
        })
    }

    async fn upload_part(&self, uri: &S3Uri, upload_id: &str, number: i32, body: Bytes) -> Result<String, StoreError> {
        let part = self
            .client
            .upload_part()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(failed("UploadPart", uri))?;
        Ok(part.e_tag.unwrap_or_default())
    }

    async fn complete_multipart(
        &self,
        uri: &S3Uri,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<(), StoreError> {
        let parts = parts
            .iter()
            .map(|(number, etag)| CompletedPart::builder().part_number(*number).e_tag(etag).build())
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(failed("CompleteMultipartUpload", uri))?;
        Ok(())
    }

    async fn copy_part(
        &self,
        uri: &S3Uri,
        upload_id: &str,
        number: i32,
        source: &S3Uri,
        (start, end): (u64, u64),
    ) -> Result<String, StoreError> {
        let copied = self
            .client
            .upload_part_copy()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .upload_id(upload_id)
            .part_number(number)
            .copy_source(format!("{}/{}", source.bucket, encode_key(&source.key)))
            .copy_source_range(format!("bytes={start}-{}", end - 1))
            .send()
            .await
            .map_err(failed("UploadPartCopy", uri))?;
        Ok(copied.copy_part_result.and_then(|r| r.e_tag).unwrap_or_default())
    }

    async fn abort_multipart(&self, uri: &S3Uri, upload_id: &str) -> Result<(), StoreError> {
        self.client
            .abort_multipart_upload()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(failed("AbortMultipartUpload", uri))?;
        Ok(())
    }
}
