//! Connections that never finish, and too many of them from one address
//! (attack 7 of the abuse review: partial heads, empty connections and
//! partial bodies were held open for minutes, and a few hundred such sockets
//! starved Login and /metrics), and `/metrics` kept off the REST listener.
//!
//! Every test runs the real binary, configured through the environment with
//! timeouts of a second or two, and talks to it over raw sockets: a server
//! without these limits ignores the variables and keeps the sockets open, so
//! the tests fail against it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::support::*;
use sessiond::pb::session_service_client::SessionServiceClient;
use sessiond::pb::Kind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Every limit long (30 s) unless the test says otherwise.
const LONG: [(&str, &str); 7] = [
    ("SESSIOND_HEADER_READ_TIMEOUT_SECS", "30"),
    ("SESSIOND_HANDSHAKE_TIMEOUT_SECS", "30"),
    ("SESSIOND_CONNECTION_IDLE_TIMEOUT_SECS", "30"),
    ("SESSIOND_KEEPALIVE_INTERVAL_SECS", "30"),
    ("SESSIOND_KEEPALIVE_TIMEOUT_SECS", "30"),
    ("SESSIOND_BODY_READ_TIMEOUT_SECS", "30"),
    ("SESSIOND_MAX_CONNECTIONS_PER_ADDRESS", "256"),
];

/// How long a test waits for a close the server should make after ~1 s.
const BOUND: Duration = Duration::from_secs(5);

fn env_with<'a>(overrides: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env: Vec<(&str, &str)> = LONG
        .iter()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .copied()
        .collect();
    env.extend_from_slice(overrides);
    env
}

fn base_args() -> Vec<&'static str> {
    let mut args = vec![
        "serve",
        "--demo",
        "--store",
        "sqlite::memory:",
        "--grpc-addr",
        "127.0.0.1:0",
        "--rest-addr",
        "127.0.0.1:0",
    ];
    args.extend(CHEAP_HASH_FLAGS);
    args
}

/// The binary with both listeners, every limit long except `overrides`.
fn server(overrides: &[(&str, &str)]) -> ServerProcess {
    ServerProcess::spawn_env(&base_args(), &env_with(overrides))
}

fn rest_addr(p: &ServerProcess) -> SocketAddr {
    p.rest_addr.expect("REST listener")
}

/// A TCP connection to `to` from the loopback address `from` (Linux routes
/// all of 127/8 to lo, so 127.0.0.2 is "another client").
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind client address");
    socket.connect(to).await.expect("connect")
}

/// Reads (and discards) until the server closes the connection: how long
/// that took and what was read, or `None` if it was still open after `bound`.
async fn closed_within(
    s: &mut (impl tokio::io::AsyncRead + Unpin),
    bound: Duration,
) -> Option<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let done = tokio::time::timeout(bound, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    done.ok().map(|()| (start.elapsed(), seen))
}

async fn assert_closed(s: &mut (impl tokio::io::AsyncRead + Unpin), what: &str) -> Vec<u8> {
    match closed_within(s, BOUND).await {
        Some((_, seen)) => seen,
        None => panic!("{what}: still open after {BOUND:?}"),
    }
}

/// A gRPC client whose connection comes from `from`.
async fn grpc_client_from(from: [u8; 4], url: &str) -> Result<Client, tonic::transport::Error> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .local_address(Some(IpAddr::from(from)))
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(3))
        .connect()
        .await?;
    Ok(SessionServiceClient::new(channel))
}

/// Login from `from` answers (with a session) within a few seconds.
async fn login_answers_from(from: [u8; 4], url: &str) -> Result<(), String> {
    let attempt = async {
        let mut c = grpc_client_from(from, url)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        try_login(&mut c, JOE, Kind::Api)
            .await
            .map(|_| ())
            .map_err(|s| format!("login: {s:?}"))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer within 5 s".into()))
}

/// RAS logon (the demo domain admin) through the REST listener from `from`:
/// its HTTP status.
async fn rest_logon_from(from: [u8; 4], rest: SocketAddr) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .local_address(IpAddr::from(from))
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    client
        .post(format!("http://{rest}/api/Session/logon"))
        .json(&serde_json::json!({"username": DOMAIN_ADMIN.0, "password": DOMAIN_ADMIN.1}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// `GET /metrics` on `addr`, retried for a few seconds (the metrics listener
/// binds just after the ones whose log lines the test waited for).
async fn get_metrics(addr: SocketAddr) -> Result<(u16, String), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| e.to_string())?
            .get(format!("http://{addr}/metrics"))
            .send()
            .await;
        match r {
            Ok(resp) => {
                let status = resp.status().as_u16();
                return Ok((status, resp.text().await.unwrap_or_default()));
            }
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

// ---- REST listener ----------------------------------------------------

#[tokio::test]
async fn rest_connection_that_sends_nothing_is_closed_after_the_handshake_timeout() {
    let p = server(&[("SESSIOND_HANDSHAKE_TIMEOUT_SECS", "1")]);
    let mut s = connect_from([127, 0, 0, 1], rest_addr(&p)).await;
    assert_closed(&mut s, "silent REST connection").await;
}

#[tokio::test]
async fn rest_partial_request_head_is_closed_after_the_header_timeout() {
    let p = server(&[("SESSIOND_HEADER_READ_TIMEOUT_SECS", "1")]);
    let mut s = connect_from([127, 0, 0, 1], rest_addr(&p)).await;
    s.write_all(b"POST /api/Session/logon HTTP/1.1\r\nHost: localhost\r\nContent-Type: appl")
        .await
        .unwrap();
    assert_closed(&mut s, "REST connection with a partial head").await;
}

#[tokio::test]
async fn rest_partial_body_is_answered_and_closed_after_the_body_timeout() {
    let p = server(&[("SESSIOND_BODY_READ_TIMEOUT_SECS", "1")]);
    let mut s = connect_from([127, 0, 0, 1], rest_addr(&p)).await;
    s.write_all(
        b"POST /api/Session/logon HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"username\":",
    )
    .await
    .unwrap();
    let seen = assert_closed(&mut s, "REST connection with a partial body").await;
    let text = String::from_utf8_lossy(&seen);
    // The vendor's error for a body that could not be read, not a session.
    assert!(text.starts_with("HTTP/1.1 4"), "answer: {text}");
}

#[tokio::test]
async fn rest_keepalive_connection_left_idle_is_closed_after_the_idle_timeout() {
    let p = server(&[("SESSIOND_CONNECTION_IDLE_TIMEOUT_SECS", "1")]);
    let mut s = connect_from([127, 0, 0, 1], rest_addr(&p)).await;
    s.write_all(b"GET /no-such-path HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let seen = assert_closed(&mut s, "idle keep-alive REST connection").await;
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 404"), "answer: {text}");
}

// ---- gRPC listener ----------------------------------------------------

#[tokio::test]
async fn grpc_connection_that_sends_nothing_is_closed_after_the_handshake_timeout() {
    let p = server(&[("SESSIOND_HANDSHAKE_TIMEOUT_SECS", "1")]);
    let mut s = connect_from([127, 0, 0, 1], p.grpc_addr()).await;
    assert_closed(&mut s, "silent gRPC connection").await;
}

#[tokio::test]
async fn grpc_partial_preface_is_closed_after_the_handshake_timeout() {
    let p = server(&[("SESSIOND_HANDSHAKE_TIMEOUT_SECS", "1")]);
    let mut s = connect_from([127, 0, 0, 1], p.grpc_addr()).await;
    s.write_all(&H2_PREFACE[..10]).await.unwrap();
    assert_closed(&mut s, "gRPC connection with a partial preface").await;
}

#[tokio::test]
async fn grpc_partial_headers_are_closed_after_the_idle_timeout() {
    let p = server(&[("SESSIOND_CONNECTION_IDLE_TIMEOUT_SECS", "1")]);
    let mut s = connect_from([127, 0, 0, 1], p.grpc_addr()).await;
    s.write_all(H2_PREFACE).await.unwrap();
    // HEADERS on stream 1 without END_HEADERS (`:method: GET`), and no
    // CONTINUATION ever: the request never starts.
    s.write_all(b"\x00\x00\x01\x01\x00\x00\x00\x00\x01\x82")
        .await
        .unwrap();
    assert_closed(&mut s, "gRPC connection with a partial HEADERS block").await;
}

#[tokio::test]
async fn grpc_stream_in_progress_outlives_the_idle_timeout() {
    let p = server(&[
        ("SESSIOND_CONNECTION_IDLE_TIMEOUT_SECS", "1"),
        ("SESSIOND_KEEPALIVE_INTERVAL_SECS", "1"),
        ("SESSIOND_KEEPALIVE_TIMEOUT_SECS", "5"),
    ]);
    let channel = tonic::transport::Endpoint::from_shared(p.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut stream = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    assert!(stream.message().await.expect("first status").is_some());
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Still open: nothing to read, and no error either.
    let next = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(next.is_err(), "the stream ended: {next:?}");
    let mut c = SessionServiceClient::new(channel);
    try_login(&mut c, JOE, Kind::Api)
        .await
        .expect("a call on the busy connection");
}

// ---- TLS handshake --------------------------------------------------------

struct TlsServer {
    process: ServerProcess,
    _dir: tempfile::TempDir,
    cert: rustls::pki_types::CertificateDer<'static>,
}

fn tls_server(overrides: &[(&str, &str)]) -> TlsServer {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let mut args = base_args();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    args.extend(["--tls-cert", cert, "--tls-key", key]);
    TlsServer {
        process: ServerProcess::spawn_env(&args, &env_with(overrides)),
        _dir: dir,
        cert: ck.cert.der().clone(),
    }
}

/// The start of a TLS record that announces a 512-byte ClientHello, and 40
/// bytes of it: more than the first-bytes rule looks for, never finished.
fn partial_client_hello() -> Vec<u8> {
    let mut b = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    b.resize(51, 0x2a);
    b
}

#[tokio::test]
async fn tls_handshake_never_finished_is_closed_on_both_listeners() {
    let server = tls_server(&[("SESSIOND_HANDSHAKE_TIMEOUT_SECS", "1")]);
    let p = &server.process;
    for (what, addr) in [("gRPC", p.grpc_addr()), ("REST", rest_addr(p))] {
        let mut s = connect_from([127, 0, 0, 1], addr).await;
        s.write_all(&partial_client_hello()).await.unwrap();
        let started = Instant::now();
        assert_closed(
            &mut s,
            &format!("{what} connection with a partial TLS handshake"),
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{what}: closed only after {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn rest_silence_after_a_finished_tls_handshake_is_closed_after_the_handshake_timeout() {
    let server = tls_server(&[("SESSIOND_HANDSHAKE_TIMEOUT_SECS", "1")]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.cert.clone()).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = connect_from([127, 0, 0, 1], rest_addr(&server.process)).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    assert_closed(&mut tls, "silent connection after its TLS handshake").await;
}

// ---- Per-address cap ----------------------------------------------------

#[tokio::test]
async fn connections_past_the_per_address_cap_are_closed_and_other_addresses_are_served() {
    let p = server(&[("SESSIOND_MAX_CONNECTIONS_PER_ADDRESS", "4")]);
    let (grpc, rest) = (p.grpc_addr(), rest_addr(&p));
    let mut held = Vec::new();
    for addr in [grpc, rest] {
        for _ in 0..4 {
            held.push(connect_from([127, 0, 0, 1], addr).await);
        }
    }
    // The server has taken all of them (the cap counts accepted ones).
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (what, addr) in [("gRPC", grpc), ("REST", rest)] {
        let mut extra = connect_from([127, 0, 0, 1], addr).await;
        match closed_within(&mut extra, Duration::from_secs(2)).await {
            Some((_, seen)) => assert!(seen.is_empty(), "{what}: answered {seen:?}"),
            None => panic!("{what}: a fifth connection from 127.0.0.1 was kept"),
        }
    }
    // Another address is unaffected on both listeners.
    login_answers_from([127, 0, 0, 2], &p.url())
        .await
        .expect("gRPC Login from 127.0.0.2");
    assert_eq!(rest_logon_from([127, 0, 0, 2], rest).await, Ok(200));
    // Closing the held connections gives the address its connections back.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    login_answers_from([127, 0, 0, 1], &p.url())
        .await
        .expect("gRPC Login from 127.0.0.1 once its connections closed");
    assert_eq!(rest_logon_from([127, 0, 0, 1], rest).await, Ok(200));
}

/// The reported attack: a descriptor limit, and more idle sockets than it
/// allows. Login, the REST shim and /metrics keep answering other clients,
/// and the attacker's own address gets its slots back once the handshake
/// timeout has closed the idle sockets.
#[tokio::test]
async fn idle_sockets_past_the_descriptor_limit_do_not_starve_login_or_metrics() {
    let metrics_port = free_port().to_string();
    let metrics_addr: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let metrics_env = metrics_addr.to_string();
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_sessiond"))
        .args(base_args());
    for (k, v) in env_with(&[
        ("SESSIOND_MAX_CONNECTIONS_PER_ADDRESS", "8"),
        ("SESSIOND_HANDSHAKE_TIMEOUT_SECS", "2"),
        ("SESSIOND_METRICS_ADDR", &metrics_env),
    ]) {
        cmd.env(k, v);
    }
    let p = ServerProcess::from_command(cmd, true, true);
    let (grpc, rest) = (p.grpc_addr(), rest_addr(&p));
    // Until the metrics listener is up (it binds just after the logged ones);
    // checked below.
    let _ = get_metrics(metrics_addr).await;
    let mut idle = Vec::new();
    for addr in [grpc, rest, metrics_addr] {
        for _ in 0..40 {
            // Tolerant: an old server without a metrics listener refuses.
            let socket = TcpSocket::new_v4().expect("socket");
            socket
                .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .expect("bind");
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_secs(1), socket.connect(addr)).await
            {
                idle.push(s);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    login_answers_from([127, 0, 0, 2], &p.url())
        .await
        .expect("gRPC Login from another address");
    assert_eq!(rest_logon_from([127, 0, 0, 2], rest).await, Ok(200));
    // The idle sockets are closed by the handshake timeout: the address that
    // opened them is served again, and /metrics answers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    login_answers_from([127, 0, 0, 1], &p.url())
        .await
        .expect("gRPC Login once the idle sockets were closed");
    let (status, text) = get_metrics(metrics_addr).await.expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(text.contains("sessiond_grpc_requests_total"), "{text}");
    drop(idle);
}

// ---- /metrics -------------------------------------------------------------

#[tokio::test]
async fn metrics_are_served_on_the_metrics_listener_and_not_on_the_rest_listener() {
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics_env = metrics_addr.to_string();
    let p = server(&[("SESSIOND_METRICS_ADDR", &metrics_env)]);
    let mut c = connect(&p.url()).await;
    login(&mut c, JOE, Kind::Api).await;
    let (status, text) = get_metrics(metrics_addr).await.expect("metrics listener");
    assert_eq!(status, 200);
    assert!(
        text.contains("sessiond_grpc_requests_total{rpc=\"Login\",code=\"Ok\"}"),
        "{text}"
    );
    // The REST listener answers /metrics like any unknown path: a 404 in
    // the shape of the vendor whose path space it is in (OpenSRS).
    let resp = http()
        .get(format!("http://{}/metrics", rest_addr(&p)))
        .send()
        .await
        .expect("REST listener answers");
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 404);
    assert!(
        !body.to_string().contains("sessiond_grpc_requests_total"),
        "{body}"
    );
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"], "Unknown method", "{body}");
}

#[tokio::test]
async fn without_a_metrics_address_metrics_are_served_nowhere() {
    let p = server(&[]);
    let resp = http()
        .get(format!("http://{}/metrics", rest_addr(&p)))
        .send()
        .await
        .expect("REST listener answers");
    assert_eq!(resp.status().as_u16(), 404);
    let text = resp.text().await.unwrap();
    assert!(!text.contains("sessiond_"), "{text}");
}

#[tokio::test]
async fn the_standalone_shim_has_the_same_limits_and_metrics_listener() {
    let backend = server(&[]);
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics_env = metrics_addr.to_string();
    let upstream = backend.url();
    let shim = ServerProcess::spawn_env(
        &[
            "rest",
            "--upstream",
            &upstream,
            "--rest-addr",
            "127.0.0.1:0",
        ],
        &env_with(&[
            ("SESSIOND_HANDSHAKE_TIMEOUT_SECS", "1"),
            ("SESSIOND_METRICS_ADDR", &metrics_env),
        ]),
    );
    let rest = rest_addr(&shim);
    let (status, text) = get_metrics(metrics_addr).await.expect("metrics listener");
    assert_eq!(status, 200, "{text}");
    let resp = http()
        .get(format!("http://{rest}/metrics"))
        .send()
        .await
        .expect("REST listener answers");
    assert_eq!(resp.status().as_u16(), 404);
    let mut s = connect_from([127, 0, 0, 1], rest).await;
    assert_closed(&mut s, "silent connection to the standalone shim").await;
    assert_eq!(rest_logon_from([127, 0, 0, 1], rest).await, Ok(200));
}
