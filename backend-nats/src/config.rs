//! The `[nats]` config section (env `TIDINGS_NATS__*`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use tidings_core::backend::cloud::Provisioning;

/// Where JetStream keeps a stream's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// On disk (survives a server restart).
    #[default]
    File,
    /// In memory.
    Memory,
}

/// Settings of the NATS JetStream backend.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsConfig {
    /// Server URL(s), comma-separated (`nats://host:4222`, `tls://host:4222`); default `NATS_URL`, else
    /// `nats://127.0.0.1:4222`.
    #[serde(default)]
    pub url: Option<String>,
    /// User name (with `password`).
    #[serde(default)]
    pub user: Option<String>,
    /// Password (with `user`).
    #[serde(default)]
    pub password: Option<String>,
    /// Authentication token.
    #[serde(default)]
    pub token: Option<String>,
    /// NKey seed (`SU...`).
    #[serde(default)]
    pub nkey: Option<String>,
    /// A `.creds` file (JWT plus NKey seed), as `nsc` writes them.
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// Require TLS (also implied by a `tls://` URL).
    #[serde(default)]
    pub tls_required: bool,
    /// PEM file of the CA that signed the server's certificate.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate (mutual TLS, with `tls_key_file`).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM client key (mutual TLS, with `tls_cert_file`).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// `auto`, `verify` or `off`.
    #[serde(default)]
    pub provisioning: Provisioning,
    /// Longest pull request a receive keeps open on the server, 1-60 s.
    #[serde(default = "default_wait", with = "humantime_serde")]
    pub wait_time: Duration,
    /// Storage of the streams tidings creates.
    #[serde(default)]
    pub storage: Storage,
    /// Replicas of the streams tidings creates (1, 3 or 5 on a cluster).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long a publish waits for concurrent publishes to share its call (zero: each is written at once). JetStream
    /// publishes are pipelined either way: a shared call saves round trips, not server work.
    #[serde(default, with = "humantime_serde")]
    pub publish_linger: Duration,
    /// How long a JetStream API call or publish waits for the server's answer.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsConfig")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &secret(&self.password))
            .field("token", &secret(&self.token))
            .field("nkey", &secret(&self.nkey))
            .field("creds_file", &self.creds_file)
            .field("tls_required", &self.tls_required)
            .field("provisioning", &self.provisioning)
            .field("wait_time", &self.wait_time)
            .field("storage", &self.storage)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

fn default_wait() -> Duration {
    Duration::from_secs(5)
}

fn default_replicas() -> usize {
    1
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: None,
            user: None,
            password: None,
            token: None,
            nkey: None,
            creds_file: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            provisioning: Provisioning::Auto,
            wait_time: default_wait(),
            storage: Storage::File,
            replicas: default_replicas(),
            publish_linger: Duration::ZERO,
            request_timeout: default_request_timeout(),
        }
    }
}
