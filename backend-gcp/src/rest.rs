//! Unary `Pull`, `Acknowledge` and `ModifyAckDeadline` over Pub/Sub's REST API (`https://pubsub.googleapis.com/v1`,
//! or the emulator, which serves the same API on its port), for the reads of a dead-letter subscription ([`crate::dlq`]),
//! and unary `Publish` for the topic driver ([`crate::publish`]): the client library publishes only through its own
//! batching, retrying publisher, while core does both for every backend.
//!
//! The client library offers only streaming pull. An operator command is a short-lived process, and a stream per
//! command left the emulator with ghost consumers that kept the dead letters leased for minutes after the process
//! had gone; a unary pull leases exactly what it returns, and the caller acks or releases each message before it ends.

use std::time::Duration;

use google_cloud_auth::credentials::{CacheableResource, Credentials};
use google_cloud_pubsub::model::Message as GMessage;
use serde::Deserialize;
use serde_json::{json, Value};
use tidings_core::{Error, Result};

/// Ack ids per `Acknowledge` / `ModifyAckDeadline` request (the API takes up to 2,500 within 512 KB).
const ACK_CHUNK: usize = 1000;
/// Messages per pull request (the API's maximum).
const PULL_MAX: usize = 1000;
/// How long one REST call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A message leased by a pull, with the id that acks or releases it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Received {
    pub ack_id: String,
    pub message: GMessage,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullResponse {
    #[serde(default)]
    received_messages: Vec<Received>,
}

/// A REST client of the Pub/Sub data plane.
#[derive(Debug)]
pub(crate) struct Rest {
    http: reqwest::Client,
    /// `https://pubsub.googleapis.com` or the configured endpoint.
    base: String,
    /// `None` for a plain-text endpoint (the emulator).
    credentials: Option<Credentials>,
}

impl Rest {
    /// A client of `endpoint` (default Google's), authenticated with Application Default Credentials unless
    /// `anonymous`.
    pub fn new(endpoint: Option<&str>, anonymous: bool) -> Result<Self> {
        let credentials = if anonymous {
            None
        } else {
            let scopes = ["https://www.googleapis.com/auth/pubsub"];
            let built = google_cloud_auth::credentials::Builder::default().with_scopes(scopes).build();
            Some(built.map_err(|e| Error::config(format!("gcp: cannot load credentials for the REST API: {e}")))?)
        };
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| Error::config(format!("gcp: cannot create an HTTP client: {e}")))?;
        let base = endpoint.unwrap_or("https://pubsub.googleapis.com").trim_end_matches('/').to_string();
        Ok(Self { http, base, credentials })
    }

    /// `POST /v1/{resource}:{verb}` with a JSON body.
    async fn call(&self, resource: &str, verb: &str, body: Value) -> Result<Value> {
        self.post(resource, verb, body.to_string()).await
    }

    /// `POST /v1/{resource}:{verb}` with a JSON body, once (no retry).
    async fn post(&self, resource: &str, verb: &str, body: String) -> Result<Value> {
        let what = format!("{verb} on {resource}");
        let mut request = self
            .http
            .post(format!("{}/v1/{resource}:{verb}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(c) = &self.credentials {
            match c.headers(http::Extensions::new()).await {
                Ok(CacheableResource::New { data, .. }) => request = request.headers(data),
                Ok(CacheableResource::NotModified) => {}
                Err(e) => {
                    return Err(Error::backend(format!("gcp: {what} failed: no credentials: {e}"), e.is_transient()))
                }
            }
        }
        let response = request.send().await.map_err(|e| {
            Error::backend(format!("gcp: {what} failed: {e}"), e.is_timeout() || e.is_connect() || e.is_request())
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| Error::backend(format!("gcp: {what} failed: {e}"), true))?;
        if !status.is_success() {
            return Err(crate::error::http(&what, status.as_u16(), &text));
        }
        serde_json::from_str(if text.trim().is_empty() { "{}" } else { &text })
            .map_err(|e| Error::backend(format!("gcp: {what}: unreadable answer ({e}): {text}"), false))
    }

    /// Publishes `messages` to `topic` in one `Publish` request, once: all of them are accepted or the call fails.
    /// Returns how many ids the service answered with.
    pub async fn publish(&self, topic: &str, messages: &[GMessage]) -> Result<usize> {
        #[derive(serde::Serialize)]
        struct Request<'a> {
            messages: &'a [GMessage],
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            #[serde(default)]
            message_ids: Vec<String>,
        }
        let body = serde_json::to_string(&Request { messages })
            .map_err(|e| Error::invalid(format!("gcp: cannot encode a publish to {topic}: {e}")))?;
        let answer: Answer = serde_json::from_value(self.post(topic, "publish", body).await?)
            .map_err(|e| Error::backend(format!("gcp: publish to {topic}: unreadable answer ({e})"), false))?;
        Ok(answer.message_ids.len())
    }

    /// Up to `max` messages of `subscription`, leased until acked, released, or their ack deadline passes. Pulls
    /// until one comes back empty; an answer that may be empty although messages exist (the API allows it) is asked
    /// again `patience` times first.
    pub async fn pull(&self, subscription: &str, max: usize, patience: usize) -> Result<Vec<Received>> {
        let mut out = Vec::new();
        let mut empty = 0;
        while out.len() < max {
            let want = (max - out.len()).min(PULL_MAX);
            let body = json!({ "maxMessages": want, "returnImmediately": true });
            let answer: PullResponse = serde_json::from_value(self.call(subscription, "pull", body).await?)
                .map_err(|e| Error::backend(format!("gcp: pull on {subscription}: unreadable message ({e})"), false))?;
            if answer.received_messages.is_empty() {
                empty += 1;
                if empty > patience {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            empty = 0;
            out.extend(answer.received_messages);
        }
        Ok(out)
    }

    /// Acks `ack_ids` (the messages leave the subscription).
    pub async fn acknowledge(&self, subscription: &str, ack_ids: &[String]) -> Result<()> {
        for chunk in ack_ids.chunks(ACK_CHUNK) {
            self.call(subscription, "acknowledge", json!({ "ackIds": chunk })).await?;
        }
        Ok(())
    }

    /// Sets the ack deadline of `ack_ids` to `seconds` from now: 0 releases them at once (the next pull sees them
    /// again), more extends their lease.
    pub async fn modify_ack_deadline(&self, subscription: &str, ack_ids: &[String], seconds: u32) -> Result<()> {
        for chunk in ack_ids.chunks(ACK_CHUNK) {
            let body = json!({ "ackIds": chunk, "ackDeadlineSeconds": seconds });
            self.call(subscription, "modifyAckDeadline", body).await?;
        }
        Ok(())
    }
}
