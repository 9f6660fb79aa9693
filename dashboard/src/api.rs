//! The JSON API behind the page, and the token check in front of it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{ConnectInfo, Path, Request};
use axum::http::{header, request::Parts, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tidings_core::admin::{Operator, Pace};
use tidings_core::{DeadLetter, ErrorKind};

use crate::assets;
use crate::audit::{Entry, Log};
use crate::figures::{Figures, Metrics, Sampler};
use crate::timeline::{self, millis, History};

/// Most dead letters read per subscription for the page.
const READ_MAX: usize = 10_000;

pub(crate) struct State {
    pub operator: Operator,
    pub actions: bool,
    pub token: Option<String>,
    pub audit: Log,
    pub metrics: Option<Metrics>,
    pub sampler: Sampler,
    pub history: History,
}

type Shared = Arc<State>;

pub(crate) fn routes(state: Shared, hosts: Arc<crate::hosts::Hosts>) -> Router {
    let api = Router::new()
        .route("/api/overview", get(overview))
        .route("/api/dlq/{topic}/{sub}", get(groups))
        .route("/api/dlq/{topic}/{sub}/redrive", post(redrive))
        .route("/api/dlq/{topic}/{sub}/purge", post(purge))
        .route("/api/log", get(log))
        .route("/api/message/{id}", get(message))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/app.js", get(assets::script))
        .route("/assets/style.css", get(assets::style))
        .merge(api)
        .layer(middleware::from_fn_with_state(hosts, crate::hosts::check))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn failure(e: tidings_core::Error) -> Response {
    let status = match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Unsupported => StatusCode::CONFLICT,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    };
    error(status, e.to_string())
}

async fn authorize(axum::extract::State(s): axum::extract::State<Shared>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given.and_then(|v| v.strip_prefix("Bearer ")) != Some(token.as_str()) {
            return error(StatusCode::UNAUTHORIZED, "this dashboard needs its token (Authorization: Bearer <token>)");
        }
    }
    next.run(req).await
}

#[derive(Serialize)]
struct Overview {
    actions: bool,
    #[serde(flatten)]
    inventory: tidings_core::admin::Inventory,
    figures: Figures,
    /// The book's pages this page links to: the dashboard's and the backend's.
    manual: Manual,
}

#[derive(Serialize)]
struct Manual {
    dashboard: String,
    backend: Option<String>,
}

impl Manual {
    fn for_backend(name: &str) -> Self {
        use tidings_core::book;
        Self { dashboard: book::url(book::DASHBOARD), backend: book::backend_page(name).map(book::url) }
    }
}

async fn overview(axum::extract::State(s): axum::extract::State<Shared>) -> Response {
    match s.operator.inventory().await {
        Ok(inventory) => {
            let figures = s.sampler.figures(&inventory, s.metrics.as_ref(), s.operator.backend_info()).await;
            let manual = Manual::for_backend(&inventory.backend);
            Json(Overview { actions: s.actions, inventory, figures, manual }).into_response()
        }
        Err(e) => failure(e),
    }
}

async fn message(axum::extract::State(s): axum::extract::State<Shared>, Path(id): Path<String>) -> Response {
    match timeline::of(&s.operator, &s.history, id.trim()).await {
        Ok(Some(t)) => Json(t).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!(
                "message {id:?} is in no dead-letter queue and was not redriven or purged from this dashboard (no \
                 backend keeps acked messages)"
            ),
        ),
        Err(e) => failure(e),
    }
}

#[derive(Serialize)]
struct Group {
    reason: String,
    count: usize,
    oldest_ms: u64,
    newest_ms: u64,
    /// A few examples: id and payload text.
    examples: Vec<(String, String)>,
}

async fn groups(
    axum::extract::State(s): axum::extract::State<Shared>,
    Path((topic, sub)): Path<(String, String)>,
) -> Response {
    let list = match s.operator.dead_letters(&topic, &sub, READ_MAX).await {
        Ok(l) => l,
        Err(e) => return failure(e),
    };
    let mut by: BTreeMap<String, Vec<&DeadLetter>> = BTreeMap::new();
    for d in &list {
        by.entry(d.reason.clone()).or_default().push(d);
    }
    let mut groups: Vec<Group> = by
        .into_iter()
        .map(|(reason, ds)| Group {
            count: ds.len(),
            oldest_ms: ds.iter().map(|d| millis(d.dead_lettered_at)).min().unwrap_or(0),
            newest_ms: ds.iter().map(|d| millis(d.dead_lettered_at)).max().unwrap_or(0),
            examples: ds
                .iter()
                .take(3)
                .map(|d| (d.id.to_string(), String::from_utf8_lossy(&d.payload).chars().take(200).collect()))
                .collect(),
            reason,
        })
        .collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    Json(serde_json::json!({ "topic": topic, "subscription": sub, "total": list.len(), "groups": groups }))
        .into_response()
}

#[derive(Deserialize)]
struct GroupAction {
    /// The reason group, exactly as listed.
    reason: String,
    /// Must be true: the page asked the person first.
    confirmed: bool,
}

/// Who asked: (who, peer, client, user agent).
fn who(parts: &Parts) -> (String, String, String, String) {
    let peer =
        parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or("unknown peer".to_string(), |c| c.0.to_string());
    Entry::who(peer, parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()))
}

async fn act(s: Shared, parts: Parts, topic: String, sub: String, body: GroupAction, redrive: bool) -> Response {
    let action = if redrive { "redrive" } else { "purge" };
    if !s.actions {
        return error(
            StatusCode::FORBIDDEN,
            "actions are off on this dashboard: start it with --allow-actions (Dashboard::allow_actions)",
        );
    }
    if !body.confirmed {
        return error(StatusCode::BAD_REQUEST, format!("{action} needs \"confirmed\": true"));
    }
    let reason = body.reason.clone();
    // What the queue tells of each chosen message, remembered for its timeline once it leaves the queue.
    let chosen = std::sync::Mutex::new(BTreeMap::new());
    let select = |d: &DeadLetter| {
        let yes = d.reason == reason;
        if yes {
            chosen.lock().unwrap().insert(d.id.to_string(), d.clone());
        }
        yes
    };
    let pace = Pace::unlimited();
    let outcome = if redrive {
        s.operator.redrive(&topic, &sub, &select, &pace).await
    } else {
        s.operator.purge(&topic, &sub, &select, &pace).await
    };
    let subscription = format!("{topic}/{sub}");
    let summary = match &outcome {
        Ok(n) if redrive => {
            format!("redrive of the group \"{}\" from this dashboard: {n} message(s) moved", body.reason)
        }
        Ok(n) => format!("purge of the group \"{}\" from this dashboard: {n} message(s) deleted", body.reason),
        Err(e) => format!("{action} of the group \"{}\" failed: {e}", body.reason),
    };
    for d in chosen.into_inner().unwrap().values() {
        let what = match (redrive, outcome.is_ok()) {
            (true, true) => "redriven",
            (false, true) => "purged",
            (true, false) => "redrive failed",
            (false, false) => "purge failed",
        };
        s.history.record(d, &subscription, what, &summary);
    }
    let (who, peer, client, user_agent) = who(&parts);
    s.audit.record(Entry {
        at: format!("{}", millis(SystemTime::now())),
        who,
        peer,
        client,
        user_agent,
        action: action.into(),
        subscription: format!("{topic}/{sub}"),
        reason: body.reason,
        outcome: match &outcome {
            Ok(n) => format!("{n} message(s)"),
            Err(e) => format!("failed after {}: {e}", pace.count()),
        },
    });
    match outcome {
        Ok(n) => Json(serde_json::json!({ "action": action, "done": n })).into_response(),
        Err(e) => failure(e),
    }
}

async fn redrive(
    axum::extract::State(s): axum::extract::State<Shared>,
    Path((topic, sub)): Path<(String, String)>,
    parts: Parts,
    Json(body): Json<GroupAction>,
) -> Response {
    act(s, parts, topic, sub, body, true).await
}

async fn purge(
    axum::extract::State(s): axum::extract::State<Shared>,
    Path((topic, sub)): Path<(String, String)>,
    parts: Parts,
    Json(body): Json<GroupAction>,
) -> Response {
    act(s, parts, topic, sub, body, false).await
}

async fn log(axum::extract::State(s): axum::extract::State<Shared>) -> Response {
    Json(s.audit.list()).into_response()
}
