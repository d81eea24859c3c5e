//! SDK configuration and clients pointed at moto, and the environment a child process needs to
//! reach it (the trigger under the Runtime API emulator, the worker under the Fargate emulator).

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;

use crate::process::EnvMap;

/// The region everything local runs in.
pub const REGION: &str = "us-east-1";
/// moto's fixed account id, which appears in its ARNs and queue URLs.
pub const ACCOUNT_ID: &str = "123456789012";
/// The static credentials moto accepts (it does not check them).
pub const ACCESS_KEY_ID: &str = "test";
/// See [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "test";

/// An SDK configuration for moto at `endpoint`: us-east-1, static test credentials, the endpoint
/// for every service. Nothing from the developer's AWS profile is used for these.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "sluice-local"))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// An S3 client with path-style addressing (`http://127.0.0.1:PORT/bucket/key`), which moto needs.
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let s3_config = aws_sdk_s3::config::Builder::from(config).force_path_style(true).build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

/// An SQS client.
pub fn sqs_client(config: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

/// An ECS client.
pub fn ecs_client(config: &SdkConfig) -> aws_sdk_ecs::Client {
    aws_sdk_ecs::Client::new(config)
}

/// What a child process needs in its environment to talk to moto at `endpoint` with any AWS SDK
/// or the AWS CLI. (With an IP-address endpoint the Rust SDK's S3 client uses path-style
/// addressing by itself.)
pub fn moto_env(endpoint: &str) -> EnvMap {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", REGION),
        ("AWS_DEFAULT_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moto_env_names_endpoint_region_and_credentials() {
        let env = moto_env("http://127.0.0.1:4566");
        assert_eq!(env["AWS_ENDPOINT_URL"], "http://127.0.0.1:4566");
        assert_eq!(env["AWS_REGION"], "us-east-1");
        assert_eq!(env["AWS_DEFAULT_REGION"], "us-east-1");
        assert_eq!(env["AWS_ACCESS_KEY_ID"], "test");
        assert_eq!(env["AWS_SECRET_ACCESS_KEY"], "test");
        assert_eq!(env["AWS_EC2_METADATA_DISABLED"], "true");
        assert_eq!(env.len(), 6);
    }
}
