//! The `Host` check against DNS rebinding, on real servers: a request naming a host the dashboard is not served
//! under (`Host: evil.example`, as a rebinding page's would) is refused with a message naming the host; its own
//! names and the configured ones are served.

use std::net::SocketAddr;
use std::sync::Arc;

use tidings_core::Bus;
use tidings_dashboard::{AllowedHost, Dashboard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `GET path` naming `host` (none for `None`, as HTTP/1.0 allows) and returns the status and body.
async fn get(addr: SocketAddr, path: &str, host: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (version, host) = match host {
        Some(h) => ("1.1", format!("Host: {h}\r\n")),
        None => ("1.0", String::new()),
    };
    s.write_all(format!("GET {path} HTTP/{version}\r\n{host}Connection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{out}"));
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    (status, body)
}

fn bus() -> Bus {
    Bus::new(Arc::new(tidings_local::LocalBackend::new()))
}

/// `Dashboard::serve` on 127.0.0.1 (as `tidings dashboard` does), allowing `dash.test` besides.
async fn served() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let d = Dashboard::new(bus()).allowed_hosts(["dash.test".parse::<AllowedHost>().unwrap()]);
    tokio::spawn(d.serve(listener, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

#[tokio::test]
async fn a_forged_host_is_refused_naming_it_and_the_dashboard_s_own_names_are_served() {
    let (addr, _stop) = served().await;
    let port = addr.port();
    for path in ["/", "/assets/app.js", "/api/overview"] {
        let (status, body) = get(addr, path, Some("evil.example")).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("\"evil.example\"") && body.contains("DNS rebinding"), "{body}");
        assert!(body.contains("--allowed-host evil.example") && body.contains(&format!("localhost:{port}")), "{body}");
    }
    // The rebinding page's own port, and loopback names on another port, are refused too.
    assert_eq!(get(addr, "/api/overview", Some(&format!("evil.example:{port}"))).await.0, 403);
    assert_eq!(get(addr, "/api/overview", Some("localhost:1")).await.0, 403);
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}"), "dash.test".into()]
    {
        let (status, body) = get(addr, "/api/overview", Some(&host)).await;
        assert_eq!(status, 200, "{host}: {body}");
        assert!(body.contains("\"backend\":\"local\""), "{body}");
    }
    let (status, page) = get(addr, "/", Some(&format!("localhost:{port}"))).await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>tidings dashboard</title>"));
    let (status, body) = get(addr, "/", None).await;
    assert_eq!(status, 400, "a request naming no host: {body}");
    assert!(body.contains("no Host header"), "{body}");
}

#[tokio::test]
async fn the_embedded_router_answers_localhost_ip_addresses_and_the_hosts_it_is_given() {
    let serve = |app: axum::Router| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    };
    let addr = serve(tidings_dashboard::router(bus())).await;
    let (status, body) = get(addr, "/api/overview", Some("evil.example:8080")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"evil.example:8080\"") && body.contains("Dashboard::allowed_hosts"), "{body}");
    // Behind the application's server (or a proxy) on any port, under localhost or an IP address.
    for host in ["localhost:3000", "127.0.0.1", "10.0.0.5:8080", "app.internal:8080"] {
        let want = if host.starts_with("app.") { 403 } else { 200 };
        assert_eq!(get(addr, "/api/overview", Some(host)).await.0, want, "{host}");
    }
    let app = Dashboard::new(bus()).allowed_hosts([".internal".parse().unwrap()]).router();
    let addr = serve(app).await;
    assert_eq!(get(addr, "/api/overview", Some("app.internal:8080")).await.0, 200);
    assert_eq!(get(addr, "/api/overview", Some("evil.example")).await.0, 403);
}
