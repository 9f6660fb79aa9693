//! The page's files, compiled into the binary (the dashboard works offline).

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub(crate) const INDEX: &str = include_str!("../assets/index.html");
pub(crate) const SCRIPT: &str = include_str!("../assets/app.js");
pub(crate) const STYLE: &str = include_str!("../assets/style.css");

fn with_type(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

pub(crate) async fn index() -> Response {
    with_type(INDEX, "text/html; charset=utf-8")
}

pub(crate) async fn script() -> Response {
    with_type(SCRIPT, "text/javascript; charset=utf-8")
}

pub(crate) async fn style() -> Response {
    with_type(STYLE, "text/css; charset=utf-8")
}
