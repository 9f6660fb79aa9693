//! `tidings dashboard`: serves the dashboard page for the configured backend; loopback by default, a token beyond.

use std::net::SocketAddr;

use tidings::dashboard::{Dashboard, Metrics};
use tidings::Bus;

use crate::args::DashboardArgs;
use crate::exit::{Failure, Outcome, BACKEND, USAGE};

pub async fn run(bus: &Bus, a: DashboardArgs) -> Outcome {
    let addr: SocketAddr = a.listen.parse().map_err(|e| {
        Failure::new(USAGE, format!("--listen {:?} is not an address such as 127.0.0.1:7878: {e}", a.listen))
    })?;
    let token = match (&a.token, &a.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| Failure::new(USAGE, format!("--token-file {f}: cannot read it: {e}")))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    }
    .filter(|t| !t.is_empty());
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(Failure::new(
            USAGE,
            format!("--listen {addr} is beyond loopback: serving there needs --token or --token-file"),
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::new(BACKEND, format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(|e| Failure::new(BACKEND, e.to_string()))?;
    eprintln!(
        "dashboard of the {} backend on http://{local}/ (actions {}{}); Ctrl-C stops",
        bus.backend_name(),
        if a.allow_actions { "on" } else { "off: --allow-actions turns them on" },
        if token.is_some() { ", token required" } else { "" }
    );
    Dashboard::new(bus.clone())
        .allow_actions(a.allow_actions)
        .token(token)
        .allowed_hosts(a.allowed_hosts)
        .metrics(a.metrics.map(Metrics::Source))
        .serve(listener, crate::signal::interrupted())
        .await
        .map_err(|e| Failure::new(BACKEND, format!("dashboard server failed: {e}")))
}
