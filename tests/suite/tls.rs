//! Optional TLS on both listeners, with a self-signed certificate made here:
//! gRPC through tonic, REST through curl, and the standalone shim over TLS in
//! front of a TLS upstream. Plaintext is refused on a TLS listener.

use std::process::Command;

use crate::support::*;
use sessiond::pb::session_service_client::SessionServiceClient;
use sessiond::pb::Kind;
use sessiond::tls::TlsFiles;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

struct Pki {
    _dir: tempfile::TempDir,
    files: TlsFiles,
    cert_pem: String,
}

fn self_signed() -> Pki {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("certificate");
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    let cert_pem = ck.cert.pem();
    std::fs::write(&files.cert, &cert_pem).unwrap();
    std::fs::write(&files.key, ck.signing_key.serialize_pem()).unwrap();
    Pki {
        _dir: dir,
        files,
        cert_pem,
    }
}

async fn tls_client(addr: std::net::SocketAddr, ca_pem: &str) -> Client {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS connection");
    SessionServiceClient::new(channel)
}

fn curl_logon(base: &str, port: u16, ca: &std::path::Path) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-H", "Content-Type: application/json", "-X", "POST"])
        .args([
            "-d",
            r#"{"username":"domain_admin@example.com","password":"pencil75"}"#,
        ])
        .arg(format!("{base}/api/Session/logon"))
        .output()
        .expect("curl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_rest_speak_tls() {
    let pki = self_signed();
    let files = pki.files.clone();
    let server = TestServer::start_rest_with(move |c| c.tls = Some(files)).await;
    let mut c = tls_client(server.running.grpc_addr, &pki.cert_pem).await;
    let (token, _) = login(&mut c, JOE, Kind::Api).await;
    assert!(is_valid(&mut c, &token).await);

    // Plaintext gRPC to the TLS listener gets nowhere.
    let refused = match SessionServiceClient::connect(server.url()).await {
        Err(_) => true,
        Ok(mut plain) => validate(&mut plain, &token).await.is_err(),
    };
    assert!(
        refused,
        "plaintext gRPC must not be answered on a TLS listener"
    );

    let port = server.running.rest_addr.unwrap().port();
    let (ok, out) = curl_logon(&format!("https://localhost:{port}"), port, &pki.files.cert);
    assert!(ok && out.contains("authToken"), "{out}");
    // Plain HTTP to it is refused, and a client that does not trust the
    // certificate refuses it.
    let (_, out) = curl_logon(&format!("http://localhost:{port}"), port, &pki.files.cert);
    assert!(
        !out.contains("authToken"),
        "plain HTTP got an answer: {out}"
    );
    let untrusted = Command::new("curl")
        .args(["-sS", "--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("https://localhost:{port}/api/Session"))
        .output()
        .unwrap();
    assert!(
        !untrusted.status.success(),
        "an untrusted certificate is refused by the client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_shim_speaks_tls_to_clients_and_to_its_upstream() {
    let pki = self_signed();
    let dir = tempfile::tempdir().unwrap();
    let mut args = serve_args(&dir.path().join("s.db"));
    args.extend(["--tls-cert".into(), pki.files.cert.display().to_string()]);
    args.extend(["--tls-key".into(), pki.files.key.display().to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let backend = ServerProcess::spawn(&refs);
    let upstream = format!("https://localhost:{}", backend.grpc_addr().port());
    let cert = pki.files.cert.display().to_string();
    let key = pki.files.key.display().to_string();
    let shim = ServerProcess::spawn(&[
        "rest",
        "--upstream",
        &upstream,
        "--upstream-ca",
        &cert,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--rest-addr",
        "127.0.0.1:0",
    ]);
    let port = shim.rest_addr.unwrap().port();
    let (ok, out) = curl_logon(&format!("https://localhost:{port}"), port, &pki.files.cert);
    assert!(ok && out.contains("authToken"), "{out}");
    assert!(shim.terminate().success());
    assert!(backend.terminate().success());

    // An https:// upstream without a CA to check it against is refused at start.
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args([
            "rest",
            "--upstream",
            "https://localhost:1",
            "--rest-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstream-ca"));
}

/// A certificate that is its own CA is refused by rustls as an end entity:
/// the shim answers 503 and says why at WARN, not only at debug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upstream_certificate_is_logged_with_its_cause() {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (
        dir.path().join("ca-cert.pem"),
        dir.path().join("ca-key.pem"),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let (cert_path, key_path) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );

    let mut args = serve_args(&dir.path().join("s.db"));
    args.extend([
        "--tls-cert".into(),
        cert_path.clone(),
        "--tls-key".into(),
        key_path,
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let backend = ServerProcess::spawn(&refs);
    let upstream = format!("https://localhost:{}", backend.grpc_addr().port());
    let shim = ServerProcess::spawn(&[
        "rest",
        "--upstream",
        &upstream,
        "--upstream-ca",
        &cert_path,
        "--rest-addr",
        "127.0.0.1:0",
    ]);
    let base = format!("http://{}", shim.rest_addr.unwrap());
    let (status, _, _) = ras_logon(&base, DOMAIN_ADMIN).await;
    assert_eq!(status, 503);
    let log = shim.log_text();
    assert!(
        log.contains("WARN")
            && log.contains("cannot reach the gRPC upstream")
            && log.contains("CaUsedAsEndEntity"),
        "{log}"
    );
}

/// `sessiond health` against a TLS listener: verified with `--upstream-ca`,
/// refused without the right CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_command_speaks_tls() {
    let pki = self_signed();
    let files = pki.files.clone();
    let server = TestServer::start_with(move |c| c.tls = Some(files)).await;
    let addr = format!("https://127.0.0.1:{}", server.running.grpc_addr.port());
    let health = move |ca: std::path::PathBuf| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_sessiond"))
                .args(["health", "--addr", &addr, "--upstream-ca"])
                .arg(ca)
                .output()
                .expect("run sessiond health")
        })
    };
    let ok = health(pki.files.cert.clone()).await.unwrap();
    assert!(ok.status.success(), "{ok:?}");
    let other = self_signed();
    let refused = health(other.files.cert.clone()).await.unwrap();
    assert!(!refused.status.success(), "{refused:?}");
}

/// `sessiond edge` follows a TLS upstream verified against its CA, and
/// refuses one whose certificate does not chain to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_speaks_tls_to_its_upstream() {
    use crate::edge::{edge_config, start_edge, SERVICE_SECRET};
    let pki = self_signed();
    let server = TestServer::start_with(|c| {
        c.tls = Some(pki.files.clone());
        c.policy.service_credential =
            Some(sessiond::sessions::ServiceCredential::new(SERVICE_SECRET).unwrap());
    })
    .await;
    let upstream = format!("https://127.0.0.1:{}", server.running.grpc_addr.port());
    let mut config = edge_config(&upstream);
    config.validator.upstream_ca = Some(pki.cert_pem.clone().into_bytes());
    let (edge, mut e) = start_edge(config).await;
    let mut c = tls_client(server.running.grpc_addr, &pki.cert_pem).await;
    let (token, _) = login(&mut c, ("joe_user@example.com", "joe-pass-1"), Kind::Api).await;
    validate(&mut e, &token)
        .await
        .expect("valid through the edge");
    edge.shutdown().await.unwrap();

    // Another CA: the edge never gets a fresh feed, and answers UNAVAILABLE.
    let other = self_signed();
    let mut config = edge_config(&upstream);
    config.validator.upstream_ca = Some(other.cert_pem.clone().into_bytes());
    let edge = sessiond::edge::start(config).await.unwrap();
    let mut e = connect(&format!("http://{}", edge.grpc_addr)).await;
    assert!(
        !edge
            .validator
            .ready(std::time::Duration::from_secs(2))
            .await
    );
    let s = validate(&mut e, &token).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unavailable);
    edge.shutdown().await.unwrap();
}
