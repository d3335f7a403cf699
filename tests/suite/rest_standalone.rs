//! `sessiond rest --upstream` as its own process in front of
//! `sessiond serve --rest-addr off`, and what it answers while the upstream is
//! unreachable (503 / OMA error_number 0), recovering when it returns.

use crate::support::*;
use serde_json::json;
use sessiond::pb::Kind;

fn spawn_shim(upstream: &str) -> ServerProcess {
    ServerProcess::spawn(&["rest", "--upstream", upstream, "--rest-addr", "127.0.0.1:0"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shim_alone_serves_every_vendor_through_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let args = serve_args(&db);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let backend = ServerProcess::spawn(&refs);
    assert!(backend.rest_addr.is_none(), "--rest-addr off");
    let shim = spawn_shim(&backend.url());
    let base = format!("http://{}", shim.rest_addr.expect("shim address"));
    let mut c = connect(&backend.url()).await;

    // RAS logon + logoff.
    let (status, _, body) = ras_logon(&base, DOMAIN_ADMIN).await;
    assert_eq!(status, 200, "{body}");
    let token = body["authToken"].as_str().unwrap().to_owned();
    assert!(
        is_valid(&mut c, &token).await,
        "the session lives in the backend"
    );
    let resp = http()
        .post(format!("{base}/api/Session/logoff"))
        .header("auth_token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(!is_valid(&mut c, &token).await);

    // OMA.
    let (imap, _) = login(&mut c, JOE, Kind::Imap).await;
    let (status, _, body) = json_of(
        http()
            .post(format!("{base}/api/logout_user"))
            .json(&json!({"credentials": {"user": DOMAIN_ADMIN.0, "password": DOMAIN_ADMIN.1}, "user": JOE.0}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body), (200, json!({"success": true})));
    assert!(!is_valid(&mut c, &imap).await);

    // Informatica.
    let (status, _, body) = json_of(
        http()
            .post(format!("{base}/ma/api/v2/user/login"))
            .json(&json!({"@type": "login", "username": USEREMAIL.0, "password": USEREMAIL.1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let ic = body["icSessionId"].as_str().unwrap().to_owned();
    let (status, _, body) = json_of(
        http()
            .post(format!("{base}/ma/api/v2/user/logoutall"))
            .json(&json!({"@type": "logout", "username": USEREMAIL.0, "password": USEREMAIL.1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["@type"], "success");
    assert!(!is_valid(&mut c, &ic).await);

    drop(c);
    assert!(shim.terminate().success());
    assert!(backend.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_503_in_each_shape_and_service_resumes() {
    // A port nobody listens on (bound, then released).
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let shim = spawn_shim(&format!("http://127.0.0.1:{port}"));
    let base = format!("http://{}", shim.rest_addr.unwrap());

    let (status, ct, body) = json_of(
        http()
            .post(format!("{base}/api/Session/logon"))
            .json(&json!({"username": DOMAIN_ADMIN.0, "password": DOMAIN_ADMIN.1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, ct.as_str()),
        (503, "application/json; api-version=1.0")
    );
    assert_eq!(body["status"], 503);

    let (status, _, body) = json_of(
        http()
            .post(format!("{base}/api/logout_user"))
            .json(&json!({"credentials": {"user": DOMAIN_ADMIN.0, "password": DOMAIN_ADMIN.1}, "user": JOE.0}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], false);
    assert_eq!(body["error_number"], 0);

    let (status, _, body) = json_of(
        http()
            .post(format!("{base}/ma/api/v2/user/logoutall"))
            .json(&json!({"username": USEREMAIL.0, "password": USEREMAIL.1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["statusCode"], 503);
    // The operator learns why: the upstream and the cause, at WARN.
    let log = shim.log_text();
    assert!(
        log.contains("WARN")
            && log.contains("cannot reach the gRPC upstream")
            && log.contains(&format!("127.0.0.1:{port}"))
            && log.contains("Connection refused"),
        "{log}"
    );

    // The backend comes up on that port: the shim reconnects by itself.
    let dir = tempfile::tempdir().unwrap();
    let mut args = serve_args(&dir.path().join("s.db"));
    let pos = args.iter().position(|a| a == "127.0.0.1:0").unwrap();
    args[pos] = format!("127.0.0.1:{port}");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let backend = ServerProcess::spawn(&refs);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let resp = http()
            .post(format!("{base}/api/Session/logon"))
            .json(&json!({"username": DOMAIN_ADMIN.0, "password": DOMAIN_ADMIN.1}))
            .send()
            .await
            .unwrap();
        if resp.status().as_u16() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "shim never recovered");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(shim.terminate().success());
    assert!(backend.terminate().success());
}

/// Logs in through the shim from a given loopback source address.
async fn login_from(base: &str, source: [u8; 4], who: (&str, &str)) -> u16 {
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(source))
        .build()
        .unwrap();
    client
        .post(format!("{base}/ma/api/v2/user/login"))
        .json(&json!({"username": who.0, "password": who.1}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_shim_keeps_per_address_throttling_per_client() {
    for (trusted, other_client_status) in [(true, 200), (false, 429)] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = serve_args(&dir.path().join("s.db"));
        args.extend(
            [
                "--max-failures-per-address",
                "3",
                "--max-failures-per-user",
                "100",
            ]
            .map(String::from),
        );
        if trusted {
            args.extend(["--trusted-proxies", "127.0.0.1"].map(String::from));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let backend = ServerProcess::spawn(&refs);
        let shim = spawn_shim(&backend.url());
        let base = format!("http://{}", shim.rest_addr.unwrap());
        for _ in 0..3 {
            assert_eq!(
                login_from(&base, [127, 0, 0, 7], (JOE.0, "wrong")).await,
                403
            );
        }
        assert_eq!(login_from(&base, [127, 0, 0, 7], USEREMAIL).await, 429);
        assert_eq!(
            login_from(&base, [127, 0, 0, 8], USEREMAIL).await,
            other_client_status,
            "trusted shim: {trusted}"
        );
        assert!(shim.terminate().success());
        assert!(backend.terminate().success());
    }
}
