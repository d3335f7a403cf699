//! OpenSRS Email API `logout_user` over real HTTP, including the documentation's own
//! example (domain_admin@example.com / pencil75 ending joe_user's mail sessions).

use crate::support::*;
use serde_json::{json, Value};
use sessiond::pb::Kind;

async fn post(base: &str, path: &str, body: &str) -> (u16, String, Value) {
    json_of(
        http()
            .post(format!("{base}{path}"))
            .body(body.to_owned())
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The example request of the OpenSRS Email API documentation, byte for byte.
const SEED_REQUEST: &str = "{\n\"credentials\": {\n\"user\": \"domain_admin@example.com\",\n\"password\": \"pencil75\"\n},\n\"user\": \"joe_user@example.com\"\n}";

#[tokio::test]
async fn the_documented_example_ends_joes_imap_and_pop_sessions_and_nothing_else() {
    let server = TestServer::start_rest().await;
    let mut c = server.client().await;
    let (imap, _) = login(&mut c, JOE, Kind::Imap).await;
    let (pop, _) = login(&mut c, JOE, Kind::Pop).await;
    let (api, _) = login(&mut c, JOE, Kind::Api).await;
    let (admin_imap, _) = login(&mut c, DOMAIN_ADMIN, Kind::Imap).await;
    let (status, ct, body) = post(&server.rest(), "/api/logout_user", SEED_REQUEST).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/json"));
    assert_eq!(body, json!({"success": true}), "the documented response");
    assert!(!is_valid(&mut c, &imap).await);
    assert!(!is_valid(&mut c, &pop).await);
    assert!(
        is_valid(&mut c, &api).await,
        "joe's API session is not a mail session"
    );
    assert!(
        is_valid(&mut c, &admin_imap).await,
        "the admin's own mail session stays"
    );
}

#[tokio::test]
async fn token_credentials_work() {
    let server = TestServer::start_rest().await;
    let mut c = server.client().await;
    let (api, _) = login(&mut c, JOE, Kind::Api).await;
    let (imap, _) = login(&mut c, JOE, Kind::Imap).await;
    let body =
        json!({"credentials": {"user": JOE.0, "token": api, "client": "webmail"}, "user": JOE.0});
    let (status, _, answer) = post(&server.rest(), "/api/logout_user", &body.to_string()).await;
    assert_eq!((status, answer), (200, json!({"success": true})));
    assert!(!is_valid(&mut c, &imap).await);
}

#[tokio::test]
async fn every_error_number_in_shape() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let creds = |user: &str, pw: &str| json!({"user": user, "password": pw});
    let cases: Vec<(Value, u64)> = vec![
        // 1: invalid credentials
        (
            json!({"credentials": creds(DOMAIN_ADMIN.0, "wrong"), "user": JOE.0}),
            1,
        ),
        (
            json!({"credentials": {"user": JOE.0, "token": "bogus"}, "user": JOE.0}),
            1,
        ),
        // 2: no such mailbox
        (
            json!({"credentials": creds(DOMAIN_ADMIN.0, DOMAIN_ADMIN.1), "user": "ghost@example.com"}),
            2,
        ),
        // 4: no authority
        (
            json!({"credentials": creds(COMPANY_ADMIN.0, COMPANY_ADMIN.1), "user": JOE.0}),
            4,
        ),
        (
            json!({"credentials": creds(USEREMAIL.0, USEREMAIL.1), "user": "admin@company.com"}),
            4,
        ),
        // 5: badly formatted request
        (json!({"user": JOE.0}), 5),
        (
            json!({"credentials": creds(DOMAIN_ADMIN.0, DOMAIN_ADMIN.1)}),
            5,
        ),
        (
            json!({"credentials": {"user": DOMAIN_ADMIN.0, "password": "p", "token": "t"}, "user": JOE.0}),
            5,
        ),
        (
            json!({"credentials": {"user": DOMAIN_ADMIN.0}, "user": JOE.0}),
            5,
        ),
        (json!({"credentials": "domain_admin", "user": JOE.0}), 5),
        (
            json!({"credentials": creds(DOMAIN_ADMIN.0, DOMAIN_ADMIN.1), "user": 42}),
            5,
        ),
        (
            json!({"credentials": {"user": 7, "password": "x"}, "user": JOE.0}),
            5,
        ),
        (json!([1, 2, 3]), 5),
        (json!("just a string"), 5),
        // 6: attributes badly formatted
        (
            json!({"credentials": creds(DOMAIN_ADMIN.0, DOMAIN_ADMIN.1), "user": "not-an-address"}),
            6,
        ),
        (
            json!({"credentials": creds(DOMAIN_ADMIN.0, DOMAIN_ADMIN.1), "user": "x".repeat(300) + "@example.com"}),
            6,
        ),
        (
            json!({"credentials": creds(&"y".repeat(300), "x"), "user": JOE.0}),
            6,
        ),
    ];
    for (body, number) in cases {
        let (status, _, answer) = post(&base, "/api/logout_user", &body.to_string()).await;
        assert_eq!(status, 200, "well-formed JSON is always 200: {body}");
        assert_eq!(answer["success"], false, "{body} -> {answer}");
        assert_eq!(answer["error_number"], number, "{body} -> {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
}

#[tokio::test]
async fn throttled_credentials_are_error_number_1() {
    let server = TestServer::start_rest_with(|c| c.policy.throttle_user.max_failures = 2).await;
    let base = server.rest();
    let bad = json!({"credentials": {"user": DOMAIN_ADMIN.0, "password": "nope"}, "user": JOE.0});
    for _ in 0..2 {
        post(&base, "/api/logout_user", &bad.to_string()).await;
    }
    let (status, _, answer) = post(&base, "/api/logout_user", SEED_REQUEST).await;
    assert_eq!(status, 200);
    assert_eq!(answer["error_number"], 1, "{answer}");
}

#[tokio::test]
async fn malformed_json_is_400_and_unknown_methods_404() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    for body in ["", "{", "{\"credentials\": ", "nul", "{\"a\":1}}"] {
        let (status, _, answer) = post(&base, "/api/logout_user", body).await;
        assert_eq!(status, 400, "{body:?}");
        assert_eq!(answer["success"], false);
        assert_eq!(answer["error_number"], 5);
    }
    let (status, _, answer) = post(&base, "/api/no_such_method", SEED_REQUEST).await;
    assert_eq!(status, 404);
    assert_eq!(answer["success"], false);
    let resp = http()
        .get(format!("{base}/api/logout_user"))
        .send()
        .await
        .unwrap();
    let (status, _, answer) = json_of(resp).await;
    assert_eq!(status, 405);
    assert_eq!(answer["success"], false);
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let server = TestServer::start_rest().await;
    let mut body: Value = serde_json::from_str(SEED_REQUEST).unwrap();
    body["extra"] = json!({"anything": [1, 2]});
    body["credentials"]["client"] = json!("my-client/1.0");
    let (status, _, answer) = post(&server.rest(), "/api/logout_user", &body.to_string()).await;
    assert_eq!((status, answer), (200, json!({"success": true})));
}
