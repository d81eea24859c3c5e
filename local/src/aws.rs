//! SDK configuration and clients pointed at moto, and the environment a child process needs to
//! reach it (the trigger under the Runtime API emulator, the worker under the Fargate emulator).
//! The harness's own clients hold the administrator's key; each program gets its role's key
//! ([`crate::iam`]).

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;

use crate::iam::AccessKey;
use crate::process::EnvMap;

/// The region everything local runs in.
pub const REGION: &str = "us-east-1";
/// moto's fixed account id, which appears in its ARNs and queue URLs.
pub const ACCOUNT_ID: &str = "123456789012";
/// The administrator's access key in moto (`local/moto/server.py` creates it): what the harness
/// and a person's AWS CLI use. The programs use their roles' keys instead.
pub const ACCESS_KEY_ID: &str = "test";
/// See [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "test";

/// An SDK configuration for moto at `endpoint` as the administrator: us-east-1, the endpoint for
/// every service. Nothing from the developer's AWS profile is used for these.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    sdk_config_as(endpoint, &AccessKey::admin()).await
}

/// An SDK configuration for moto at `endpoint` with `key` (a program's role, say).
pub async fn sdk_config_as(endpoint: &str, key: &AccessKey) -> SdkConfig {
    let credentials = Credentials::new(&key.access_key_id, &key.secret_access_key, None, None, "sluice-local");
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(credentials)
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

/// What a child process needs in its environment to reach moto at `endpoint` with any AWS SDK or
/// the AWS CLI, credentials aside (see [`credentials_env`]). (With an IP-address endpoint the
/// Rust SDK's S3 client uses path-style addressing by itself.)
pub fn moto_env(endpoint: &str) -> EnvMap {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", REGION),
        ("AWS_DEFAULT_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

/// The variables that hand a process `key`, as Lambda hands a function its role's credentials.
pub fn credentials_env(key: &AccessKey) -> EnvMap {
    EnvMap::from([
        ("AWS_ACCESS_KEY_ID".to_owned(), key.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), key.secret_access_key.clone()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moto_env_names_endpoint_and_region_and_no_credentials() {
        let env = moto_env("http://127.0.0.1:4566");
        assert_eq!(env["AWS_ENDPOINT_URL"], "http://127.0.0.1:4566");
        assert_eq!(env["AWS_REGION"], "us-east-1");
        assert_eq!(env["AWS_DEFAULT_REGION"], "us-east-1");
        assert_eq!(env["AWS_EC2_METADATA_DISABLED"], "true");
        assert_eq!(env.len(), 4);
        let key = AccessKey::admin();
        assert_eq!(credentials_env(&key)["AWS_ACCESS_KEY_ID"], "test");
    }
}
