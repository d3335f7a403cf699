//! Informatica Cloud v2 login, logout and logoutall over real HTTP, including
//! the logoutall example of Informatica's documentation (useremail@company.com / mypassword).

use crate::support::*;
use serde_json::{json, Value};
use sessiond::pb::Kind;

async fn post_json(base: &str, path: &str, body: &str) -> (u16, String, Value) {
    json_of(
        http()
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn ic_login(base: &str, who: (&str, &str)) -> Value {
    let body = json!({"@type": "login", "username": who.0, "password": who.1}).to_string();
    let (status, _, answer) = post_json(base, "/ma/api/v2/user/login", &body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

#[track_caller]
fn assert_error(got: &(u16, String, Value), status: u16, code: Option<&str>) {
    let (s, _, body) = got;
    assert_eq!(*s, status, "{body}");
    assert_eq!(body["@type"], "error");
    assert_eq!(
        body["statusCode"], status,
        "statusCode equals the HTTP status"
    );
    assert!(body["description"].as_str().is_some_and(|d| !d.is_empty()));
    if let Some(code) = code {
        assert_eq!(body["code"], code);
    } else {
        assert!(body["code"].is_string());
    }
}

#[tokio::test]
async fn login_returns_a_user_object_with_a_session() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let user = ic_login(&base, USEREMAIL).await;
    assert_eq!(user["@type"], "user");
    assert_eq!(user["name"], USEREMAIL.0);
    assert_eq!(user["orgId"], "company.com");
    assert_eq!(user["serverUrl"], format!("{base}/saas"));
    let token = user["icSessionId"].as_str().unwrap();
    let mut c = server.client().await;
    assert_eq!(
        validate(&mut c, token).await.unwrap().kind,
        Kind::Api as i32
    );
    // @type may be left out.
    let (status, _, _) = post_json(
        &base,
        "/ma/api/v2/user/login",
        &json!({"username": USEREMAIL.0, "password": USEREMAIL.1}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_credentials_are_403_ui_10000() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    for (u, p) in [(USEREMAIL.0, "wrong"), ("ghost@company.com", "x")] {
        let body = json!({"@type": "login", "username": u, "password": p}).to_string();
        let got = post_json(&base, "/ma/api/v2/user/login", &body).await;
        assert_error(&got, 403, Some("UI_10000"));
        assert_eq!(got.2["description"], "User name or password is not valid.");
        let body = json!({"@type": "logout", "username": u, "password": p}).to_string();
        let got = post_json(&base, "/ma/api/v2/user/logoutall", &body).await;
        assert_error(&got, 403, Some("UI_10000"));
    }
}

#[tokio::test]
async fn logout_on_both_paths_ends_the_session_with_an_empty_200() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let mut c = server.client().await;
    for path in ["/saas/api/v2/user/logout", "/api/v2/user/logout"] {
        let token = ic_login(&base, USEREMAIL).await["icSessionId"]
            .as_str()
            .unwrap()
            .to_owned();
        let resp = http()
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .header("icSessionId", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        assert!(resp.bytes().await.unwrap().is_empty());
        assert!(!is_valid(&mut c, &token).await);
        // Again: the session is gone.
        let got = json_of(
            http()
                .post(format!("{base}{path}"))
                .header("icSessionId", &token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_error(&got, 401, None);
    }
    let got = json_of(
        http()
            .post(format!("{base}/api/v2/user/logout"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, 401, None);
}

/// The logoutall example body of Informatica's documentation.
const SEED_LOGOUTALL: &str = "{\n\"@type\": \"logout\",\n\"username\": \"useremail@company.com\",\n\"password\": \"mypassword\"\n}";

#[tokio::test]
async fn the_documented_logoutall_ends_every_api_session_of_the_org_only() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let mut c = server.client().await;
    let a = ic_login(&base, USEREMAIL).await["icSessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = ic_login(&base, COMPANY_ADMIN).await["icSessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (imap, _) = login(&mut c, USEREMAIL, Kind::Imap).await;
    let (other_org, _) = login(&mut c, JOE, Kind::Api).await;
    for path in ["/ma/api/v2/user/logoutall", "/api/v2/user/logoutall"] {
        let (status, _, body) = post_json(&base, path, SEED_LOGOUTALL).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["@type"], "success");
        assert!(body["description"].is_string());
    }
    assert!(!is_valid(&mut c, &a).await);
    assert!(!is_valid(&mut c, &b).await);
    assert!(is_valid(&mut c, &imap).await);
    assert!(is_valid(&mut c, &other_org).await);
}

#[tokio::test]
async fn bad_bodies_are_400_error_objects() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    for body in [
        "",
        "{",
        "[]",
        "{\"@type\": \"login\", \"username\": 5, \"password\": \"x\"}",
        "{\"@type\": \"something\", \"username\": \"a\", \"password\": \"x\"}",
        "{\"@type\": \"logout\", \"username\": \"\", \"password\": \"x\"}",
    ] {
        let path = if body.contains("logout") {
            "/ma/api/v2/user/logoutall"
        } else {
            "/ma/api/v2/user/login"
        };
        let got = post_json(&base, path, body).await;
        assert_error(&got, 400, None);
    }
    let resp = http()
        .post(format!("{base}/ma/api/v2/user/logoutall"))
        .header("content-type", "text/xml")
        .body("<logout/>")
        .send()
        .await
        .unwrap();
    assert_error(&json_of(resp).await, 415, None);
    let got = json_of(
        http()
            .get(format!("{base}/ma/api/v2/user/login"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, 405, None);
    let got = post_json(&base, "/ma/api/v2/user/nothing", "{}").await;
    assert_error(&got, 404, None);
}

#[tokio::test]
async fn throttling_is_429_with_retry_after() {
    let server = TestServer::start_rest_with(|c| c.policy.throttle_user.max_failures = 2).await;
    let base = server.rest();
    let bad = json!({"username": USEREMAIL.0, "password": "nope"}).to_string();
    for _ in 0..2 {
        post_json(&base, "/ma/api/v2/user/login", &bad).await;
    }
    let resp = http()
        .post(format!("{base}/ma/api/v2/user/login"))
        .header("content-type", "application/json")
        .body(json!({"username": USEREMAIL.0, "password": USEREMAIL.1}).to_string())
        .send()
        .await
        .unwrap();
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_error(&json_of(resp).await, 429, None);
}
