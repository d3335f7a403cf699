//! Hostile input over the wire: non-UTF-8 strings, truncated messages, huge
//! and negative fields. Each gets INVALID_ARGUMENT or UNAUTHENTICATED, never a
//! panic, and the server keeps serving.

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use sessiond::pb::{self, Kind};
use tonic::Code;

/// Sends raw bytes as the protobuf body of `method` (gRPC framing by hand) and
/// returns the grpc-status code.
async fn raw_call(addr: std::net::SocketAddr, method: &str, message: &[u8]) -> Code {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{addr}/session.v1.SessionService/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(Bytes::from(frame)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let status = parts
        .headers
        .get("grpc-status")
        .cloned()
        .or_else(|| {
            collected
                .trailers()
                .and_then(|t| t.get("grpc-status").cloned())
        })
        .expect("grpc-status");
    Code::from_bytes(status.as_bytes())
}

/// Protobuf field `tag` (wire type 2) holding `bytes`.
fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(tag << 3) | 2];
    let mut len = bytes.len();
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_and_truncated_messages_are_invalid_argument() {
    let server = TestServer::start().await;
    let addr = server.running.grpc_addr;
    let not_utf8 = [0xff, 0xfe, 0x80, b'a'];
    let mut login = field(1, &not_utf8);
    login.extend(field(2, b"pw"));
    login.extend([3 << 3, 2]); // kind = API
    assert_eq!(raw_call(addr, "Login", &login).await, Code::InvalidArgument);
    assert_eq!(
        raw_call(addr, "ValidateSession", &field(1, &not_utf8)).await,
        Code::InvalidArgument
    );
    // Length prefix says 50 bytes, 3 follow.
    assert_eq!(
        raw_call(addr, "ValidateSession", &[0x0a, 50, b'a', b'b', b'c']).await,
        Code::InvalidArgument
    );
    let creds = field(1, &field(1, &not_utf8));
    assert_eq!(
        raw_call(addr, "LogoutUser", &creds).await,
        Code::InvalidArgument
    );
    // Still serving.
    let mut c = server.client().await;
    login_ok(&mut c).await;
}

async fn login_ok(c: &mut Client) {
    let (t, _) = login(c, JOE, Kind::Api).await;
    assert!(is_valid(c, &t).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_fields_are_refused_without_harm() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let huge = "u".repeat(1 << 20);
    let r = c
        .login(pb::LoginRequest {
            username: huge.clone(),
            password: "x".into(),
            kind: Kind::Api as i32,
            client: None,
        })
        .await;
    assert_status(r, Code::InvalidArgument, "INVALID_ARGUMENT");
    let r = c
        .login(pb::LoginRequest {
            username: JOE.0.into(),
            password: huge.clone(),
            kind: Kind::Api as i32,
            client: None,
        })
        .await;
    assert_status(r, Code::InvalidArgument, "INVALID_ARGUMENT");
    let r = c
        .logout_all(pb::LogoutAllRequest {
            username: huge.clone(),
            password: huge.clone(),
        })
        .await;
    assert_status(r, Code::InvalidArgument, "INVALID_ARGUMENT");
    let r = c
        .logout_user(pb::LogoutUserRequest {
            credentials: Some(pb::Credentials {
                user: huge.clone(),
                secret: Some(pb::credentials::Secret::Token(huge.clone())),
                client: String::new(),
            }),
            user: huge.clone(),
        })
        .await;
    assert_status(r, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_status(
        validate(&mut c, &huge).await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    login_ok(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_garbage_leaves_the_server_serving() {
    // Random credentials fail; keep the address lockout out of the way.
    let server = TestServer::start_with(|c| c.policy.throttle_address.max_failures = 10_000).await;
    let addr = server.running.grpc_addr;
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for i in 0..300 {
        let len = (i * 7) % 200;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let method = [
            "Login",
            "ValidateSession",
            "LogoutUser",
            "LogoutAll",
            "ListSessions",
        ][i % 5];
        let code = raw_call(addr, method, &bytes).await;
        assert!(
            matches!(
                code,
                Code::InvalidArgument | Code::Unauthenticated | Code::NotFound
            ),
            "{method} with {} random bytes gave {code:?}",
            bytes.len()
        );
    }
    let mut c = server.client().await;
    tokio::time::timeout(Duration::from_secs(10), login_ok(&mut c))
        .await
        .expect("still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_four_mebibytes_are_out_of_range() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let r = c
        .validate_session(pb::ValidateSessionRequest {
            token: "t".repeat(5 << 20),
        })
        .await;
    assert_eq!(r.unwrap_err().code(), Code::OutOfRange);
    login_ok(&mut c).await;
}
