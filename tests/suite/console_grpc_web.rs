//! The console's gRPC-Web door on the REST listener, spoken byte by byte
//! over HTTP/1.1 with reqwest (as a browser's `fetch` does): length-prefixed
//! frames in, a data frame and a trailer frame out. The door is the same
//! service behind the same call layer as the gRPC listener (the browser's
//! address recorded, metrics, shedding), refuses what is not gRPC-Web with a
//! 4xx, and the page it serves carries its policy headers.

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use prost::Message;
use sessiond::pb::{self, Kind};
use tonic::Code;

const GRPC_WEB: &str = "application/grpc-web+proto";

/// `/session.v1.SessionService/<rpc>` on the REST listener.
fn door(server: &TestServer, rpc: &str) -> String {
    format!("{}/session.v1.SessionService/{rpc}", server.rest())
}

/// One gRPC-Web message frame: flag 0 (uncompressed), length (u32, big
/// endian), the encoded message.
fn frame(msg: &impl Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn login_request(who: (&str, &str), kind: Kind) -> pb::LoginRequest {
    pb::LoginRequest {
        username: who.0.into(),
        password: who.1.into(),
        kind: kind as i32,
        client: None,
    }
}

/// A gRPC-Web answer taken apart.
#[derive(Debug)]
struct WebAnswer {
    http: u16,
    headers: http::HeaderMap,
    /// The data frames' payloads, in order.
    messages: Vec<Bytes>,
    /// The trailer frame (flag 0x80), as headers; empty when there was none.
    trailers: http::HeaderMap,
}

impl WebAnswer {
    /// The call's status: from the headers of a trailers-only answer, else
    /// from the trailer frame (`None` when neither names one).
    fn status(&self) -> Option<tonic::Status> {
        if self.headers.contains_key("grpc-status") {
            tonic::Status::from_header_map(&self.headers)
        } else {
            tonic::Status::from_header_map(&self.trailers)
        }
    }

    #[track_caller]
    fn code(&self) -> Code {
        self.status()
            .unwrap_or_else(|| panic!("no grpc-status in headers or trailers: {self:?}"))
            .code()
    }

    /// The one message of a unary success.
    #[track_caller]
    fn message<M: Message + Default>(&self) -> M {
        assert_eq!(self.http, 200, "{self:?}");
        assert_eq!(self.code(), Code::Ok, "{:?}", self.status());
        assert_eq!(self.messages.len(), 1, "{self:?}");
        M::decode(self.messages[0].clone()).expect("the data frame decodes")
    }
}

/// Splits a gRPC-Web body into its frames.
fn parse_frames(body: &[u8]) -> (Vec<Bytes>, http::HeaderMap) {
    let mut messages = Vec::new();
    let mut trailers = http::HeaderMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "a cut frame header: {rest:?}");
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        assert!(rest.len() >= 5 + len, "a cut frame: {len} bytes announced");
        let payload = &rest[5..5 + len];
        rest = &rest[5 + len..];
        if flag & 0x80 != 0 {
            let text = std::str::from_utf8(payload).expect("trailers are text");
            for line in text.split("\r\n").filter(|l| !l.is_empty()) {
                let (name, value) = line.split_once(':').expect("name:value");
                trailers.append(
                    http::HeaderName::from_bytes(name.trim().as_bytes()).expect("trailer name"),
                    http::HeaderValue::from_str(value.trim()).expect("trailer value"),
                );
            }
        } else {
            assert_eq!(flag, 0, "uncompressed data frame");
            messages.push(Bytes::copy_from_slice(payload));
        }
    }
    (messages, trailers)
}

/// POSTs `body` to the door's `rpc` as gRPC-Web, with these extra headers.
async fn call_raw(
    server: &TestServer,
    rpc: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> WebAnswer {
    let mut req = http()
        .post(door(server, rpc))
        .header("content-type", GRPC_WEB)
        .header("accept", GRPC_WEB)
        .header("x-grpc-web", "1")
        .body(body);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("HTTP request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    let http = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    let (messages, trailers) = parse_frames(&bytes);
    WebAnswer {
        http,
        headers,
        messages,
        trailers,
    }
}

async fn call(
    server: &TestServer,
    rpc: &str,
    msg: &impl Message,
    token: Option<&str>,
) -> WebAnswer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let extra: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    call_raw(server, rpc, frame(msg), &extra).await
}

/// The value of one series in the Prometheus text (0 when absent).
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

async fn metrics_text(server: &TestServer) -> String {
    let addr = server.running.metrics_addr.expect("metrics listener");
    let resp = http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics answer");
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.expect("metrics text")
}

// ---------------------------------------------------------------- (a)

#[tokio::test]
async fn a_grpc_web_login_over_http1_opens_a_session_from_the_browsers_address() {
    let server = TestServer::start_rest().await;
    let answer = call(
        &server,
        "Login",
        &login_request(DOMAIN_ADMIN, Kind::Admin),
        None,
    )
    .await;
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web"),
        "{answer:?}"
    );
    // A success carries its status after the message, in the trailer frame.
    assert!(!answer.headers.contains_key("grpc-status"), "{answer:?}");
    assert_eq!(answer.trailers["grpc-status"], "0", "{answer:?}");
    let login: pb::LoginResponse = answer.message();
    assert_eq!(login.token.len(), 43, "a base64url token");
    let opened = login.session.expect("session in the answer");
    assert_eq!(opened.kind, Kind::Admin as i32);
    assert_eq!(opened.user, DOMAIN_ADMIN.0);
    assert_eq!(opened.peer_address, "127.0.0.1");

    // The native gRPC listener sees the same session, opened from the
    // browser's (here: reqwest's) address.
    let mut c = server.client().await;
    let s = validate(&mut c, &login.token)
        .await
        .expect("the token is valid");
    assert_eq!(s.id, opened.id);
    assert_eq!(s.peer_address, "127.0.0.1");

    // An authenticated call through the door, as the console makes them:
    // the bearer token is a request header.
    let listed: pb::ListSessionsResponse = call(
        &server,
        "ListSessions",
        &pb::ListSessionsRequest {
            kind: Kind::Admin as i32,
            ..Default::default()
        },
        Some(&login.token),
    )
    .await
    .message();
    let mine = listed
        .sessions
        .iter()
        .find(|s| s.id == opened.id)
        .expect("the new session is listed");
    assert_eq!(mine.peer_address, "127.0.0.1");
}

#[tokio::test]
async fn a_browser_cannot_choose_the_address_its_session_records() {
    // The REST listener's peer is not a trusted proxy: its x-forwarded-for
    // is ignored, at the door as on the gRPC listener.
    let server = TestServer::start_rest().await;
    let answer = call_raw(
        &server,
        "Login",
        frame(&login_request(JOE, Kind::Api)),
        &[("x-forwarded-for", "203.0.113.9")],
    )
    .await;
    let login: pb::LoginResponse = answer.message();
    let mut c = server.client().await;
    let s = validate(&mut c, &login.token).await.expect("valid");
    assert_eq!(s.peer_address, "127.0.0.1");
}

// ---------------------------------------------------------------- (b)

#[tokio::test]
async fn a_refused_grpc_web_login_says_unauthenticated_in_its_grpc_status() {
    let server = TestServer::start_rest().await;
    let answer = call(
        &server,
        "Login",
        &login_request((DOMAIN_ADMIN.0, "wrong"), Kind::Admin),
        None,
    )
    .await;
    // gRPC-Web answers errors with HTTP 200 too: the status is the call's.
    assert_eq!(answer.http, 200, "{answer:?}");
    assert!(answer.messages.is_empty(), "{answer:?}");
    let status = answer.status().expect("a grpc-status");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.code() as i32, 16);
    // The ErrorInfo travels too (grpc-status-details-bin), as on gRPC.
    assert_eq!(reason(&status), "BAD_CREDENTIALS");
    // And nothing was opened.
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let live = c
        .list_sessions(authed(pb::ListSessionsRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(live.len(), 1, "{live:?}");
}

// ---------------------------------------------------------------- (c)

#[tokio::test]
async fn grpc_web_calls_count_under_the_same_rpc_metrics_as_grpc_calls() {
    let server = TestServer::start_rest_with(|c| {
        c.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    // One native call first, so the series exist.
    let mut c = server.client().await;
    login(&mut c, JOE, Kind::Api).await;
    let ok = "sessiond_grpc_requests_total{rpc=\"Login\",code=\"Ok\"}";
    let refused = "sessiond_grpc_requests_total{rpc=\"Login\",code=\"Unauthenticated\"}";
    let before = metrics_text(&server).await;
    assert!(series(&before, ok) >= 1.0, "{before}");

    for _ in 0..2 {
        let answer = call(&server, "Login", &login_request(JOE, Kind::Api), None).await;
        assert_eq!(answer.code(), Code::Ok, "{answer:?}");
    }
    let answer = call(
        &server,
        "Login",
        &login_request((JOE.0, "wrong"), Kind::Api),
        None,
    )
    .await;
    assert_eq!(answer.code(), Code::Unauthenticated, "{answer:?}");

    let after = metrics_text(&server).await;
    assert_eq!(series(&after, ok) - series(&before, ok), 2.0, "{after}");
    assert_eq!(
        series(&after, refused) - series(&before, refused),
        1.0,
        "{after}"
    );
    assert!(after.contains("sessiond_grpc_request_duration_seconds_bucket{rpc=\"Login\""));
}

#[tokio::test]
async fn the_door_sheds_by_queue_delay_as_the_grpc_listener_does() {
    // A queue-delay bound no call can meet: every call arriving from the
    // network is shed before its handler runs. The door has it, as the gRPC
    // listener does; the REST shim's in-process calls (no queue between the
    // shim and the service) do not.
    let server = TestServer::start_rest_with(|c| c.max_queue_delay = Duration::ZERO).await;
    let answer = call(
        &server,
        "Login",
        &login_request(DOMAIN_ADMIN, Kind::Admin),
        None,
    )
    .await;
    assert_eq!(answer.http, 200, "{answer:?}");
    assert!(answer.messages.is_empty(), "{answer:?}");
    let status = answer.status().expect("a grpc-status");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "OVERLOADED");

    let mut c = server.client().await;
    assert_status(
        try_login(&mut c, DOMAIN_ADMIN, Kind::Admin).await,
        Code::ResourceExhausted,
        "OVERLOADED",
    );

    let (status, _, body) = ras_logon(&server.rest(), DOMAIN_ADMIN).await;
    assert_eq!(status, 200, "{body}");
}

// ---------------------------------------------------------------- (d)

#[tokio::test]
async fn the_door_refuses_what_is_not_grpc_web_with_a_4xx() {
    let server = TestServer::start_rest().await;
    let url = door(&server, "Login");
    let body = frame(&login_request(DOMAIN_ADMIN, Kind::Admin));
    let h = http();
    let attempts = [
        ("GET, no content type", h.get(&url)),
        (
            "GET, gRPC-Web",
            h.get(&url).header("content-type", GRPC_WEB),
        ),
        (
            "POST, JSON",
            h.post(&url)
                .header("content-type", "application/json")
                .body(r#"{"username":"x"}"#),
        ),
        (
            "POST, native gRPC over HTTP/1.1",
            h.post(&url)
                .header("content-type", "application/grpc")
                .body(body.clone()),
        ),
        ("POST, no content type", h.post(&url).body(body.clone())),
        (
            "a cross-origin preflight",
            h.request(reqwest::Method::OPTIONS, &url)
                .header("origin", "https://evil.example")
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type,x-grpc-web"),
        ),
    ];
    for (what, req) in attempts {
        let resp = req.send().await.expect("an answer");
        let status = resp.status().as_u16();
        assert!((400..500).contains(&status), "{what}: {status}");
        assert!(
            !resp.headers().contains_key("access-control-allow-origin"),
            "{what}: no CORS"
        );
        assert!(
            !resp.headers().contains_key("grpc-status"),
            "{what}: not handed to the service"
        );
    }

    // A method the service does not have: UNIMPLEMENTED, as gRPC says.
    let answer = call_raw(&server, "Nope", body.clone(), &[]).await;
    assert_eq!(answer.http, 200, "{answer:?}");
    assert_eq!(answer.code(), Code::Unimplemented, "{answer:?}");
    assert_eq!(answer.code() as i32, 12);

    // Bytes that are no LoginRequest: INVALID_ARGUMENT, as on gRPC.
    let garbage = vec![0, 0, 0, 0, 3, 0xff, 0xff, 0xff];
    let answer = call_raw(&server, "Login", garbage, &[]).await;
    assert_eq!(answer.code(), Code::InvalidArgument, "{answer:?}");

    // A frame shorter than it says: an error status, not a hang or a panic.
    let cut = vec![0, 0, 0, 0, 100, 1, 2, 3];
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        call_raw(&server, "Login", cut, &[]),
    )
    .await
    .expect("an answer within 10 s");
    assert_ne!(answer.code(), Code::Ok, "{answer:?}");

    // After all of that the door still serves.
    let answer = call_raw(&server, "Login", body, &[]).await;
    let login: pb::LoginResponse = answer.message();
    assert!(!login.token.is_empty());
}

/// One request over HTTP/2 without TLS (prior knowledge, as the REST
/// listener serves it): (HTTP status, grpc-status header if any).
async fn h2c(
    server: &TestServer,
    method: http::Method,
    rpc: &str,
    content_type: Option<&str>,
) -> (u16, Option<String>) {
    let addr = server.running.rest_addr.expect("REST listener");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}/session.v1.SessionService/{rpc}"));
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let req = req
        .body(http_body_util::Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let grpc_status = resp
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), grpc_status)
}

/// The door is for gRPC-Web whatever the HTTP version: over HTTP/2 a GET,
/// or a body that is not gRPC-Web (native gRPC included), gets a 4xx as it
/// does over HTTP/1.1. tonic-web alone would hand such an HTTP/2 request to
/// the service as it is (HTTP 200, grpc-status 13, counted as an INTERNAL
/// call), and serve native gRPC on the REST listener.
#[tokio::test]
async fn over_http2_too_the_door_refuses_what_is_not_grpc_web_with_a_4xx() {
    let server = TestServer::start_rest().await;
    let attempts = [
        ("GET, no content type", http::Method::GET, None),
        ("POST, JSON", http::Method::POST, Some("application/json")),
        ("POST, no content type", http::Method::POST, None),
    ];
    for (what, method, ct) in attempts {
        let (status, grpc_status) = h2c(&server, method, "Login", ct).await;
        assert!(
            (400..500).contains(&status),
            "{what}: HTTP {status}, grpc-status {grpc_status:?}"
        );
    }
}

// ---------------------------------------------------------------- (e)

#[tokio::test]
async fn the_console_page_carries_its_policy_headers_and_revalidates() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    let resp = no_redirects
        .get(format!("{base}/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 308);
    assert_eq!(resp.headers()["location"], "/console/");

    let resp = http().get(format!("{base}/console/")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let headers = resp.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let etag = headers["etag"].clone();
    assert!(!resp.text().await.unwrap().is_empty());

    let resp = http()
        .get(format!("{base}/console/"))
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 304);
    assert_eq!(resp.headers()["etag"], etag);
    assert!(resp.bytes().await.unwrap().is_empty());

    // Another tag is not this page's: the page itself.
    let resp = http()
        .get(format!("{base}/console/"))
        .header("if-none-match", "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}
