//! Parallels RAS routes over real HTTP: logon, logoff, LogOff Other Admin and
//! the admin session list; ProblemDetails on every error; api-version.

use crate::support::*;
use serde_json::{json, Value};
use sessiond::pb::Kind;

const RAS_JSON: &str = "application/json; api-version=1.0";

async fn logon(base: &str, user: (&str, &str)) -> (u16, String, Value) {
    ras_logon(base, user).await
}

async fn token_of(base: &str, user: (&str, &str)) -> (String, i64) {
    let (status, _, body) = logon(base, user).await;
    assert_eq!(status, 200, "{body}");
    (
        body["authToken"].as_str().unwrap().to_owned(),
        body["sessionId"].as_i64().unwrap(),
    )
}

#[track_caller]
fn assert_problem(got: &(u16, String, Value), status: u16, instance: &str) {
    let (code, ct, body) = got;
    assert_eq!(*code, status, "{body}");
    assert_eq!(ct, RAS_JSON);
    let obj = body.as_object().expect("ProblemDetails object");
    for key in ["type", "title", "status", "detail", "instance"] {
        assert!(obj.contains_key(key), "{key} missing in {body}");
    }
    assert_eq!(body["status"], status);
    assert_eq!(body["instance"], instance);
    assert!(body["type"].as_str().unwrap().starts_with("https://"));
}

#[tokio::test]
async fn logon_returns_an_admin_session() {
    let server = TestServer::start_rest().await;
    let (status, ct, body) = logon(&server.rest(), DOMAIN_ADMIN).await;
    assert_eq!(status, 200);
    assert_eq!(ct, RAS_JSON);
    assert_eq!(body["userId"], "domain_admin@example.com");
    assert!(body["sessionId"].as_i64().unwrap() > 0);
    let token = body["authToken"].as_str().unwrap();
    let mut c = server.client().await;
    let s = validate(&mut c, token).await.unwrap();
    assert_eq!(s.kind, Kind::Admin as i32);
    assert_eq!(i64::from(s.id), body["sessionId"].as_i64().unwrap());
}

#[tokio::test]
async fn logon_errors_are_problem_details() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let got = logon(&base, (DOMAIN_ADMIN.0, "wrong")).await;
    assert_problem(&got, 401, "/api/Session/logon");
    let got = logon(&base, ("nobody@example.com", "x")).await;
    assert_problem(&got, 401, "/api/Session/logon");
    // A plain user may not open an admin console session: 401, as RAS documents.
    let got = logon(&base, JOE).await;
    assert_problem(&got, 401, "/api/Session/logon");
    let got = logon(&base, ("", "x")).await;
    assert_problem(&got, 400, "/api/Session/logon");
}

#[tokio::test]
async fn logoff_ends_the_callers_session_with_a_json_string() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let (token, id) = token_of(&base, DOMAIN_ADMIN).await;
    let got = json_of(
        http()
            .post(format!("{base}/api/Session/logoff"))
            .header("auth_token", &token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.0, 200);
    assert_eq!(got.1, RAS_JSON);
    assert!(got.2.is_string(), "a JSON string: {}", got.2);
    assert!(got.2.as_str().unwrap().contains(&id.to_string()));
    let mut c = server.client().await;
    assert!(!is_valid(&mut c, &token).await);
    // Twice: 401.
    let again = json_of(
        http()
            .post(format!("{base}/api/Session/logoff"))
            .header("auth_token", &token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&again, 401, "/api/Session/logoff");
    let missing = json_of(
        http()
            .post(format!("{base}/api/Session/logoff"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&missing, 401, "/api/Session/logoff");
}

async fn logoff_other(base: &str, token: &str, id: &str) -> (u16, String, Value) {
    json_of(
        http()
            .post(format!("{base}/api/Session/{id}/logoff"))
            .header("auth_token", token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn logoff_other_admin_is_204_and_every_error_in_shape() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let (admin, _) = token_of(&base, DOMAIN_ADMIN).await;
    let (victim, victim_id) = token_of(&base, DOMAIN_ADMIN).await;
    let (other_org, _) = token_of(&base, COMPANY_ADMIN).await;
    let mut c = server.client().await;
    let (joe, _) = login(&mut c, JOE, Kind::Api).await;

    // Another org's admin: 404, and the session lives on.
    let got = logoff_other(&base, &other_org, &victim_id.to_string()).await;
    assert_problem(&got, 404, &format!("/api/Session/{victim_id}/logoff"));
    assert!(is_valid(&mut c, &victim).await);
    // A non-admin: 403.
    let got = logoff_other(&base, &joe, &victim_id.to_string()).await;
    assert_problem(&got, 403, &format!("/api/Session/{victim_id}/logoff"));
    // No token: 401.
    let got = json_of(
        http()
            .post(format!("{base}/api/Session/{victim_id}/logoff"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&got, 401, &format!("/api/Session/{victim_id}/logoff"));
    // Not an int32 > 0: 400.
    for bad in ["0", "-4", "abc", "2147483648", "1.5"] {
        let got = logoff_other(&base, &admin, bad).await;
        assert_problem(&got, 400, &format!("/api/Session/{bad}/logoff"));
    }

    let resp = http()
        .post(format!("{base}/api/Session/{victim_id}/logoff"))
        .header("auth_token", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert!(resp.bytes().await.unwrap().is_empty(), "no body");
    assert!(!is_valid(&mut c, &victim).await);
    // Already ended: 404.
    let got = logoff_other(&base, &admin, &victim_id.to_string()).await;
    assert_eq!(got.0, 404);
}

#[tokio::test]
async fn paths_are_case_insensitive() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    for path in [
        "/api/session/logon",
        "/API/SESSION/LOGON",
        "/Api/Session/Logon",
    ] {
        let resp = http()
            .post(format!("{base}{path}"))
            .json(&json!({"username": DOMAIN_ADMIN.0, "password": DOMAIN_ADMIN.1}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    let (token, _) = token_of(&base, DOMAIN_ADMIN).await;
    let resp = http()
        .get(format!("{base}/API/session"))
        .header("auth_token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn list_shows_the_orgs_admin_sessions() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let (admin, id1) = token_of(&base, DOMAIN_ADMIN).await;
    let (_, id2) = token_of(&base, DOMAIN_ADMIN).await;
    token_of(&base, COMPANY_ADMIN).await;
    let mut c = server.client().await;
    login(&mut c, JOE, Kind::Imap).await;
    let (status, ct, body) = json_of(
        http()
            .get(format!("{base}/api/Session"))
            .header("auth_token", &admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ct, RAS_JSON);
    let ids: Vec<i64> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sessionId"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![id1, id2], "only example.com's ADMIN sessions");
    assert!(!body.to_string().contains(&admin), "never tokens");
    let (joe, _) = login(&mut c, JOE, Kind::Api).await;
    let got = json_of(
        http()
            .get(format!("{base}/api/Session"))
            .header("auth_token", &joe)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&got, 403, "/api/Session");
    let got = json_of(
        http()
            .get(format!("{base}/api/Session"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&got, 401, "/api/Session");
}

#[tokio::test]
async fn api_version_other_than_1_0_is_refused() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let body = json!({"username": DOMAIN_ADMIN.0, "password": DOMAIN_ADMIN.1}).to_string();
    for (ct, expect) in [
        ("application/json; api-version=1.0", 200),
        ("application/json", 200),
        ("application/json; api-version=2.0", 400),
        ("application/json;api-version=0.9", 400),
        ("text/plain", 415),
    ] {
        let resp = http()
            .post(format!("{base}/api/Session/logon"))
            .header("content-type", ct)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let got = json_of(resp).await;
        if expect == 200 {
            assert_eq!(got.0, 200, "{ct}: {}", got.2);
        } else {
            assert_problem(&got, expect, "/api/Session/logon");
        }
    }
    // No content type at all means 1.0 and JSON.
    let resp = http()
        .post(format!("{base}/api/Session/logon"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn unknown_ras_paths_and_methods_are_problem_details() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let got = json_of(
        http()
            .get(format!("{base}/api/Session/nope"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&got, 404, "/api/Session/nope");
    let got = json_of(
        http()
            .get(format!("{base}/api/Session/logon"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&got, 405, "/api/Session/logon");
}
