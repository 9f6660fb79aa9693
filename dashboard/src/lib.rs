//! The tidings dashboard: a page (every asset embedded, so it works offline) with the topology, backlog and DLQ depth
//! per subscription, and dead letters grouped by reason with redrive and purge per group.
//!
//! Embed it in an application, where it also serves the in-memory bus (it reads the subscriptions running on the
//! bus):
//!
//! ```
//! # use std::sync::Arc;
//! # use tidings_core::{Bus, Message, SubscriptionConfig, Topic, TopicConfig};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! # let bus = Bus::new(Arc::new(tidings_local::LocalBackend::new()));
//! # let orders: Topic<u32> = Topic::new("orders", TopicConfig::at_least_once());
//! # let handler = |_: Message<u32>| async { Ok(()) };
//! # let _billing = bus.subscribe(&orders, "billing", SubscriptionConfig::default(), handler).await.unwrap();
//! let app = tidings_dashboard::Dashboard::new(bus).allow_actions(true).router();
//! // The application's own routes can sit beside it: `axum::Router::new().route(...).merge(app)`.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?; // port 0: any free port
//! println!("dashboard on http://{}/", listener.local_addr()?);
//! # let addr = listener.local_addr()?;
//! # let shutdown = async move {
//! #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! #     let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
//! #     c.write_all(b"GET /api/overview HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
//! #     let mut answer = String::new();
//! #     c.read_to_string(&mut answer).await.unwrap();
//! #     assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("billing"), "{answer}");
//! # };
//! // `shutdown`: a future that completes when the application stops (a signal, say).
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
//!     .with_graceful_shutdown(shutdown)
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! or run `tidings dashboard`. Actions (redrive, purge) need [`Dashboard::allow_actions`]; with a
//! [`Dashboard::token`] every API call needs `Authorization: Bearer <token>` (the page asks for it and keeps it in the
//! tab's session storage; no page contains it). Each action is logged (tracing, target `tidings::dashboard`) and
//! listed on the page with who (peer address, client; the full user agent on hover) and what.
//!
//! The dashboard answers only requests naming one of its hosts in `Host` (a guard against DNS rebinding, as
//! development servers have): served by [`Dashboard::serve`] on loopback, `localhost`, `127.0.0.1` and `[::1]` with
//! its port; on a specific address, that address; the router alone (embedded, behind the application's server),
//! `localhost` and any IP address. Add the names it is reached under with [`Dashboard::allowed_hosts`]; other hosts
//! get 403 with a message naming the host.
#![warn(missing_docs)]

mod api;
mod assets;
mod audit;
pub mod cost;
mod figures;
mod hosts;
mod timeline;

use std::sync::Arc;

use tidings_core::admin::Operator;
use tidings_core::Bus;

pub use audit::Entry;
pub use figures::{Figures, Metrics, SubscriptionRates};
pub use hosts::{AllowedHost, InvalidHost};
pub use timeline::{Event, Timeline};

/// Builds the dashboard's router.
#[derive(Debug, Clone)]
pub struct Dashboard {
    operator: Operator,
    actions: bool,
    token: Option<String>,
    metrics: Option<Metrics>,
    hosts: Vec<AllowedHost>,
}

impl Dashboard {
    /// A read-only dashboard of `bus`.
    pub fn new(bus: Bus) -> Self {
        Self { operator: Operator::new(&bus), actions: false, token: None, metrics: None, hosts: Vec::new() }
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

    /// Host names the dashboard also answers (the `Host` of a request), besides its own: the names it is reached
    /// under through DNS or a proxy, such as `dash.example.com` (any port), `dash.example.com:8443`, `.example.com`
    /// (the domain and its subdomains), or `*` (any host: only behind a proxy that checks `Host` itself). Parse each
    /// with `"dash.example.com".parse::<AllowedHost>()`.
    ///
    /// Its own names: `localhost`, `127.0.0.1` and `[::1]` with the port when [served](Self::serve) on loopback, the
    /// address when served on a specific one, `localhost` and any IP address with the port on `0.0.0.0`; for the
    /// [router](Self::router) alone, embedded in an application whose address it does not know, `localhost` and any
    /// IP address on any port. A request naming another host gets 403 (a guard against DNS rebinding).
    pub fn allowed_hosts(mut self, hosts: impl IntoIterator<Item = AllowedHost>) -> Self {
        self.hosts.extend(hosts);
        self
    }

    /// The router: `/` (the page), `/assets/*`, `/api/*`, answering `localhost`, IP addresses and the
    /// [allowed hosts](Self::allowed_hosts) (the application serves it, on an address the router does not know).
    pub fn router(self) -> axum::Router {
        self.build(hosts::Own::Embedded)
    }

    fn build(self, own: hosts::Own) -> axum::Router {
        let state = Arc::new(api::State {
            operator: self.operator,
            actions: self.actions,
            token: self.token,
            audit: audit::Log::default(),
            metrics: self.metrics,
            sampler: figures::Sampler::default(),
            history: timeline::History::default(),
        });
        api::routes(state, Arc::new(hosts::Hosts::new(own, self.hosts)))
    }
}

impl Dashboard {
    /// Serves the router on `listener` (with peer addresses, for the action log) until `shutdown` completes,
    /// answering the listener's own host names and the [allowed hosts](Self::allowed_hosts).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let own = hosts::Own::Listening(listener.local_addr()?);
        let app = self.build(own).into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await
    }
}

/// A read-only dashboard router of `bus` answering `localhost` and IP addresses (see [`Dashboard`] for actions, a
/// token and [allowed hosts](Dashboard::allowed_hosts)).
pub fn router(bus: Bus) -> axum::Router {
    Dashboard::new(bus).router()
}
