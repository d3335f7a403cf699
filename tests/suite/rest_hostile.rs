//! Malformed and hostile bodies on every body-taking route: answered in the
//! vendor's shape, never a panic, and the server keeps serving.

use crate::support::*;
use serde_json::json;

/// (path, content type sent, how the vendor answers malformed JSON)
const ROUTES: [(&str, &str); 4] = [
    ("/api/Session/logon", "ras"),
    ("/api/logout_user", "oma"),
    ("/ma/api/v2/user/login", "informatica"),
    ("/ma/api/v2/user/logoutall", "informatica"),
];

#[track_caller]
fn assert_shape(vendor: &str, status: u16, body: &serde_json::Value, expect: u16) {
    assert_eq!(status, expect, "{vendor}: {body}");
    match vendor {
        "ras" => {
            assert_eq!(body["status"], expect);
            assert!(body["type"].is_string() && body["title"].is_string());
        }
        "oma" => {
            assert_eq!(body["success"], false);
            assert!(body["error_number"].is_u64());
        }
        _ => {
            assert_eq!(body["@type"], "error");
            assert_eq!(body["statusCode"], expect);
        }
    }
}

async fn send(base: &str, path: &str, body: Vec<u8>) -> (u16, String, serde_json::Value) {
    json_of(
        http()
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_answered_in_shape() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    // Deep, but under the 64 KiB limit: refused by the parser's depth bound.
    let deep = "[".repeat(30_000) + &"]".repeat(30_000);
    let deep_object = "{\"a\":".repeat(5_000) + "1" + &"}".repeat(5_000);
    let malformed: Vec<Vec<u8>> = vec![
        b"{\"username\": \"dom".to_vec(),
        b"\xff\xfe{\"username\": 1}".to_vec(),
        b"{\"username\": \"\xc3\x28\", \"password\": \"x\"}".to_vec(),
        deep.clone().into_bytes(),
        deep_object.into_bytes(),
        b"   ".to_vec(),
        b"{\"a\": NaN}".to_vec(),
    ];
    for (path, vendor) in ROUTES {
        for body in &malformed {
            let (status, _, answer) = send(&base, path, body.clone()).await;
            assert_shape(vendor, status, &answer, 400);
        }
    }
    let mut c = server.client().await;
    login(&mut c, JOE, sessiond::pb::Kind::Api).await;
}

/// Announces `declared` body bytes, sends at most `sent` of them, and reads
/// the answer as a client that stops uploading would.
async fn oversized(
    addr: &str,
    path: &str,
    declared: usize,
    sent: usize,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {declared}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before all of this is written.
    let _ = stream.write_all(&vec![b' '; sent]).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut raw),
    )
    .await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .expect("status line")
        .parse()
        .unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_64_kib_are_413_in_shape() {
    let server = TestServer::start_rest().await;
    let addr = server.running.rest_addr.unwrap().to_string();
    for (path, vendor) in ROUTES {
        for (declared, sent) in [(10 << 20, 256 * 1024), (64 * 1024 + 1, 64 * 1024 + 1)] {
            let (status, answer) = oversized(&addr, path, declared, sent).await;
            assert_shape(vendor, status, &answer, 413);
        }
    }
    // Just under the limit is read and answered on its merits (bad field).
    let base = server.rest();
    let under = json!({"username": "x".repeat(60 * 1024), "password": "y"}).to_string();
    let (status, _, answer) = send(&base, "/api/Session/logon", under.into_bytes()).await;
    assert_shape("ras", status, &answer, 400);
    let mut c = server.client().await;
    login(&mut c, JOE, sessiond::pb::Kind::Api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_and_shapes_never_reach_grpc_as_success() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let bodies = [
        json!({"username": ["domain_admin@example.com"], "password": "pencil75"}),
        json!({"username": {"$ne": null}, "password": "pencil75"}),
        json!({"username": "domain_admin@example.com", "password": true}),
        json!({"username": "domain_admin@example.com", "password": 75}),
        json!(null),
        json!(17),
    ];
    for body in bodies {
        for (path, vendor) in [
            ("/api/Session/logon", "ras"),
            ("/ma/api/v2/user/login", "informatica"),
        ] {
            let (status, _, answer) = send(&base, path, body.to_string().into_bytes()).await;
            assert_shape(vendor, status, &answer, 400);
        }
        let (status, _, answer) =
            send(&base, "/api/logout_user", body.to_string().into_bytes()).await;
        assert_eq!(status, 200);
        assert_eq!(answer["error_number"], 5, "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_headers_are_refused_in_shape() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let bad_token = reqwest::header::HeaderValue::from_bytes(b"\xff\xfe-not-text").unwrap();
    let got = json_of(
        http()
            .post(format!("{base}/api/Session/logoff"))
            .header("auth_token", bad_token.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_shape("ras", got.0, &got.2, 401);
    let got = json_of(
        http()
            .post(format!("{base}/api/v2/user/logout"))
            .header("icSessionId", bad_token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_shape("informatica", got.0, &got.2, 401);
    let got = json_of(
        http()
            .post(format!("{base}/api/Session/logoff"))
            .header("auth_token", "A".repeat(8000))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_shape("ras", got.0, &got.2, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_in_the_user_agent_is_not_a_bad_request() {
    let server = TestServer::start_rest().await;
    let resp = http()
        .post(format!("{}/ma/api/v2/user/login", server.rest()))
        .header("user-agent", "curl/8.0\tplus-extras")
        .json(&json!({"username": USEREMAIL.0, "password": USEREMAIL.1}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 200, "{body}");
    let mut c = server.client().await;
    let s = validate(&mut c, body["icSessionId"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(s.client.unwrap().user_agent, "curl/8.0 plus-extras");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_refused_on_routes_without_a_body_too() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let big = vec![b' '; 200 * 1024];
    for (path, vendor) in [
        ("/api/Session/logoff", "ras"),
        ("/api/Session/5/logoff", "ras"),
        ("/api/v2/user/logout", "informatica"),
        ("/api/unknown_method", "oma"),
    ] {
        let (status, _, answer) = send(&base, path, big.clone()).await;
        assert_shape(vendor, status, &answer, 413);
    }
}

/// A path parameter that is not UTF-8 once percent-decoded gets the vendor's
/// answer for a bad value, not the router's plain-text rejection: RAS 401
/// without a live token and 400 with one, OpenSRS 404 "Unknown method".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_parameters_that_are_not_utf8_are_answered_in_shape() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let post = |path: &str, token: Option<&str>| {
        let mut req = http().post(format!("{base}{path}"));
        if let Some(t) = token {
            req = req.header("auth_token", t);
        }
        req.send()
    };
    let (status, ct, body) = json_of(post("/api/Session/%FF/logoff", None).await.unwrap()).await;
    assert_shape("ras", status, &body, 401);
    assert_eq!(ct, "application/json; api-version=1.0");
    let (_, _, logon) = ras_logon(&base, DOMAIN_ADMIN).await;
    let token = logon["authToken"].as_str().unwrap().to_owned();
    let (status, _, body) = json_of(
        post("/api/Session/%FF%FE/logoff", Some(&token))
            .await
            .unwrap(),
    )
    .await;
    assert_shape("ras", status, &body, 400);
    assert_eq!(body["instance"], "/api/Session/%FF%FE/logoff");
    let (status, _, body) = send(&base, "/api/%FF", b"{}".to_vec()).await;
    assert_shape("oma", status, &body, 404);
    assert_eq!(body["error"], "Unknown method");
}
