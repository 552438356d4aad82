//! S3 credentials from an AWS profile (`AWS_PROFILE`, default `default`, in
//! `AWS_SHARED_CREDENTIALS_FILE`/`AWS_CONFIG_FILE` or `~/.aws/credentials` and
//! `~/.aws/config`) through aws-config, for object_store, whose own chain has no
//! profiles. Credentials are kept until five minutes before they expire. `Debug` shows
//! the profile's name only.

// aws-config names the profile-file types after `aws_runtime`, which hoist does not
// depend on; the old names are aliases of the same types (hoist-agent does the same).
#![allow(deprecated)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
use aws_credential_types::provider::ProvideCredentials;
use object_store::CredentialProvider;
use object_store::aws::AwsCredential;
use tokio::sync::Mutex;

use super::BlobEnv;

pub struct ProfileCredentials {
    profile: String,
    provider: ProfileFileCredentialsProvider,
    cached: Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl std::fmt::Debug for ProfileCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileCredentials")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl ProfileCredentials {
    /// The profile provider when a profile file exists (and no key is in the
    /// environment: those come first, as in every AWS SDK).
    pub async fn from_env(env: &BlobEnv) -> Option<ProfileCredentials> {
        if env.var("AWS_ACCESS_KEY_ID").is_some() {
            return None;
        }
        let home = env.var("HOME").map(PathBuf::from);
        let mut existing: Vec<(ProfileFileKind, PathBuf)> = Vec::new();
        for (kind, var, default) in [
            (
                ProfileFileKind::Credentials,
                "AWS_SHARED_CREDENTIALS_FILE",
                ".aws/credentials",
            ),
            (ProfileFileKind::Config, "AWS_CONFIG_FILE", ".aws/config"),
        ] {
            let path = env
                .var(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(default)));
            if let Some(p) = path
                && tokio::fs::metadata(&p).await.is_ok_and(|m| m.is_file())
            {
                existing.push((kind, p));
            }
        }
        if existing.is_empty() {
            return None;
        }
        let mut files = ProfileFiles::builder()
            .include_default_credentials_file(false)
            .include_default_config_file(false);
        for (kind, path) in existing {
            files = files.with_file(kind, path);
        }
        let profile = env.var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let provider = ProfileFileCredentialsProvider::builder()
            .profile_files(files.build())
            .profile_name(&profile)
            .build();
        Some(ProfileCredentials {
            profile,
            provider,
            cached: Mutex::new(None),
        })
    }
}

#[async_trait]
impl CredentialProvider for ProfileCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((c, expiry)) = cached.as_ref() {
            let fresh = expiry.is_none_or(|e| {
                e.duration_since(SystemTime::now())
                    .is_ok_and(|left| left > Duration::from_secs(300))
            });
            if fresh {
                return Ok(c.clone());
            }
        }
        let c = self.provider.provide_credentials().await.map_err(|e| {
            object_store::Error::Generic {
                store: "S3",
                source: format!(
                    "AWS profile `{}`: {}",
                    self.profile,
                    aws_credential_types::provider::error::CredentialsError::to_string(&e)
                )
                .into(),
            }
        })?;
        let cred = Arc::new(AwsCredential {
            key_id: c.access_key_id().to_string(),
            secret_key: c.secret_access_key().to_string(),
            token: c.session_token().map(str::to_string),
        });
        *cached = Some((cred.clone(), c.expiry()));
        Ok(cred)
    }
}
