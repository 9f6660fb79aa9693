//! The tidings dashboard: a page (every asset embedded, so it works offline) with the topology, backlog and DLQ depth
//! per subscription, and dead letters grouped by reason with redrive and purge per group.
//!
//! Embed it in an application, where it also serves the in-memory bus (it reads the subscriptions running on the
//! bus):
//!
//! ```no_run
//! # async fn demo(bus: tidings_core::Bus) {
//! let app = tidings_dashboard::Dashboard::new(bus).allow_actions(true).router();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7878").await.unwrap();
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await.unwrap();
//! # }
//! ```
//!
//! or run `tidings dashboard`. Actions (redrive, purge) need [`Dashboard::allow_actions`]; with a
//! [`Dashboard::token`] every API call needs `Authorization: Bearer <token>` (the page asks for it and keeps it in the
//! tab's session storage; no page contains it). Each action is logged (tracing, target `tidings::dashboard`) and
//! listed on the page with who (peer address, user agent) and what.
#![warn(missing_docs)]

mod api;
mod assets;
mod audit;
pub mod cost;
mod figures;
mod timeline;

use std::sync::Arc;

use tidings_core::admin::Operator;
use tidings_core::Bus;

pub use audit::Entry;
pub use figures::{Figures, Metrics, SubscriptionRates};
pub use timeline::{Event, Timeline};

/// Builds the dashboard's router.
#[derive(Debug, Clone)]
pub struct Dashboard {
    operator: Operator,
    actions: bool,
    token: Option<String>,
    metrics: Option<Metrics>,
}

impl Dashboard {
    /// A read-only dashboard of `bus`.
    pub fn new(bus: Bus) -> Self {
        Self { operator: Operator::new(&bus), actions: false, token: None, metrics: None }
    }

    /// Allows redrive and purge from the page.
    pub fn allow_actions(mut self, on: bool) -> Self {
        self.actions = on;
        self
    }

    /// Requires this bearer token on every API call (needed to serve beyond loopback).
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// Reads the application's metrics (Prometheus text) for rates, cost per subscription and in-process figures:
    /// [`Metrics::Render`] in the application itself, [`Metrics::Source`] (a scrape URL or file) elsewhere.
    pub fn metrics(mut self, metrics: Option<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The router: `/` (the page), `/assets/*`, `/api/*`.
    pub fn router(self) -> axum::Router {
        let state = Arc::new(api::State {
            operator: self.operator,
            actions: self.actions,
            token: self.token,
            audit: audit::Log::default(),
            metrics: self.metrics,
            sampler: figures::Sampler::default(),
            redriven: timeline::Redriven::default(),
        });
        api::routes(state)
    }
}

impl Dashboard {
    /// Serves the router on `listener` (with peer addresses, for the action log) until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.router().into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await
    }
}

/// A read-only dashboard router of `bus` (see [`Dashboard`] for actions and a token).
pub fn router(bus: Bus) -> axum::Router {
    Dashboard::new(bus).router()
}
