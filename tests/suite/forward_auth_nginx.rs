//! A real nginx (`auth_request`) in front of a small application, asking
//! `sessiond edge`'s `GET /auth` about every request: a live session passes
//! with its `X-Session-*` headers, no token or an ended one is 401, and a
//! session ended at sessiond stops passing at once. The nginx configuration
//! is the README's.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;

use crate::edge::{edge_config, start_edge, SERVICE_SECRET};
use crate::support::*;
use sessiond::pb::{self, Kind};
use sessiond::sessions::ServiceCredential;

/// nginx's configuration between the README's markers, with its three
/// addresses and its paths filled in.
fn nginx_conf(dir: &std::path::Path, listen: u16, auth: SocketAddr, app: SocketAddr) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let block: String = readme
        .lines()
        .skip_while(|l| !l.contains("<!-- nginx-forward-auth -->"))
        .skip(2)
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        block.contains("auth_request"),
        "README lacks the nginx example"
    );
    let server = block
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{listen}"))
        .replace("127.0.0.1:9001", &auth.to_string())
        .replace("127.0.0.1:3000", &app.to_string());
    let d = dir.display();
    format!(
        "master_process off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
           access_log {d}/access.log;\n\
           client_body_temp_path {d}/body;\n\
           proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n\
           scgi_temp_path {d}/scgi;\n\
         {server}\n\
         }}\n"
    )
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The application behind nginx: says who nginx told it the caller is.
async fn app() -> SocketAddr {
    async fn hello(h: HeaderMap) -> String {
        let get = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        format!(
            "hello {} of {} ({} session {})",
            get("x-session-user"),
            get("x-session-org"),
            get("x-session-kind"),
            get("x-session-id")
        )
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/{*path}", get(hello)))
            .await
            .unwrap();
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_lets_live_sessions_through_and_stops_ended_ones() {
    let server = TestServer::start_with(|c| {
        c.policy.service_credential = Some(ServiceCredential::new(SERVICE_SECRET).unwrap());
    })
    .await;
    let mut config = edge_config(&server.url());
    config.auth_cookie = Some("sessiond".into());
    let (edge, _) = start_edge(config).await;
    let app = app().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        nginx_conf(dir.path(), port, edge.auth_addr.unwrap(), app),
    )
    .unwrap();
    let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nginx");
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (Debian: apt-get install nginx) on PATH");
    let _nginx = Nginx(child);
    let base = format!("http://127.0.0.1:{port}");
    let web = http();
    let deadline = Instant::now() + Duration::from_secs(10);
    while web.get(format!("{base}/")).send().await.is_err() {
        assert!(Instant::now() < deadline, "nginx never listened: {}", {
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut c = server.client().await;
    let (token, session) = login(&mut c, ("joe_user@example.com", "joe-pass-1"), Kind::Api).await;
    let r = web
        .get(format!("{base}/reports/1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        format!(
            "hello joe_user@example.com of example.com (api session {})",
            session.id
        )
    );
    // The cookie the README's example names.
    let r = web
        .get(format!("{base}/reports/1"))
        .header("cookie", format!("sessiond={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // No token, a malformed one, an unknown one: 401 from nginx, and the
    // application never sees the request.
    for bearer in [None, Some("nonsense".to_owned()), Some("A".repeat(43))] {
        let mut req = web.get(format!("{base}/reports/1"));
        if let Some(b) = &bearer {
            req = req.bearer_auth(b);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{bearer:?}");
        assert!(!r.text().await.unwrap().contains("hello"));
    }

    c.logoff(authed(pb::LogoffRequest {}, &token))
        .await
        .unwrap();
    let ended = Instant::now();
    loop {
        let r = web
            .get(format!("{base}/reports/1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if r.status() == 401 {
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(
            ended.elapsed() < Duration::from_secs(5),
            "an ended session still passes nginx"
        );
    }
    eprintln!(
        "nginx refused the ended session {:?} after Logoff",
        ended.elapsed()
    );
    edge.shutdown().await.unwrap();
}
