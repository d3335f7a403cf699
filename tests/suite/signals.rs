//! The Shared Signals transmitter over the real server: discovery and
//! JWKS, stream management and who may do it, the poll endpoint with every
//! end reason, status, subjects and verification. Every SET is verified by
//! an independent JOSE implementation (Python's jwcrypto), never by the
//! code that signed it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;
use sessiond::domain::Role;
use sessiond::pb::{self, Kind};
use sessiond::sessions::{Lifetimes, ServiceCredential};

pub const SERVICE_SECRET: &str = "ssf-service-credential-0123456789abcdef";
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
const STREAM_UPDATED: &str = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated";

pub async fn transmitter_with(adjust: impl FnOnce(&mut sessiond::config::Config)) -> TestServer {
    TestServer::start_rest_with(|c| {
        c.policy.service_credential = Some(ServiceCredential::new(SERVICE_SECRET).unwrap());
        c.policy.max_sessions_per_user = 0;
        adjust(c);
    })
    .await
}

pub async fn transmitter() -> TestServer {
    transmitter_with(|_| {}).await
}

/// A call to an SSF endpoint with a bearer token: (status, JSON body).
pub async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let (status, _, body) = json_of(req.send().await.unwrap()).await;
    (status, body)
}

pub async fn post(url: &str, token: &str, body: Value) -> (u16, Value) {
    call(reqwest::Method::POST, url, Some(token), Some(body)).await
}

/// Verifies each SET against the JWKS with jwcrypto; returns, by jti, the
/// protected header and the claims it verified.
pub fn verify(jwks: &Value, sets: &BTreeMap<String, String>) -> BTreeMap<String, (Value, Value)> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    std::fs::write(&input, json!({"jwks": jwks, "sets": sets}).to_string()).unwrap();
    let script = r#"
import json, sys
from jwcrypto import jwk, jws
data = json.load(open(sys.argv[1]))
keys = jwk.JWKSet.from_json(json.dumps(data["jwks"]))
out = {}
for jti, token in data["sets"].items():
    s = jws.JWS()
    s.deserialize(token)
    header = s.jose_header
    key = keys.get_key(header["kid"])
    assert key is not None, "kid not in the JWKS"
    s.verify(key, alg="ES256")
    out[jti] = [header, json.loads(s.payload)]
print(json.dumps(out))
"#;
    let run = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&input)
        .output()
        .expect("python3 runs (jwcrypto: pip install jwcrypto)");
    assert!(
        run.status.success(),
        "jwcrypto refused a SET: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out: BTreeMap<String, (Value, Value)> = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(out.len(), sets.len());
    out
}

pub async fn jwks(server: &TestServer) -> Value {
    jwks_at(&server.rest()).await
}

pub async fn jwks_at(rest: &str) -> Value {
    let (status, body) = call(
        reqwest::Method::GET,
        &format!("{rest}/ssf/jwks.json"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    body
}

/// A poll stream of `org` made with the service credential: its config.
pub async fn poll_stream(server: &TestServer, org: &str) -> Value {
    let (status, body) = post(
        &format!("{}/ssf/streams", server.rest()),
        SERVICE_SECRET,
        json!({"org": org}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

/// Polls (acknowledging what the previous poll returned) until `until`
/// holds for what arrived, or 20 s pass. Returns every SET, verified.
pub async fn poll_until(
    server: &TestServer,
    stream: &Value,
    until: impl Fn(&BTreeMap<String, (Value, Value)>) -> bool,
) -> BTreeMap<String, (Value, Value)> {
    let url = stream["delivery"]["endpoint_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let keys = jwks(server).await;
    let mut got = BTreeMap::new();
    let mut ack: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !until(&got) {
        assert!(Instant::now() < deadline, "not every SET arrived: {got:?}");
        let (status, body) = post(
            &url,
            SERVICE_SECRET,
            json!({"ack": ack, "maxEvents": 50, "returnImmediately": false}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let sets: BTreeMap<String, String> = serde_json::from_value(body["sets"].clone()).unwrap();
        ack = sets.keys().cloned().collect();
        got.extend(verify(&keys, &sets));
    }
    // Acknowledge the last batch, so a later poll starts after it.
    post(
        &url,
        SERVICE_SECRET,
        json!({"ack": ack, "maxEvents": 0, "returnImmediately": true}),
    )
    .await;
    got
}

pub fn revoked_session(claims: &Value) -> Option<i64> {
    claims["events"].get(SESSION_REVOKED)?;
    claims["sub_id"]["session"]["id"].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_names_every_endpoint_and_the_jwks_has_public_keys_only() {
    let server = transmitter().await;
    let base = server.rest();
    let (status, meta) = call(
        reqwest::Method::GET,
        &format!("{base}/.well-known/ssf-configuration"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(meta["spec_version"], "1_0");
    assert_eq!(meta["issuer"], base.as_str());
    assert_eq!(
        meta["delivery_methods_supported"],
        json!(["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"])
    );
    for (member, path) in [
        ("jwks_uri", "/ssf/jwks.json"),
        ("configuration_endpoint", "/ssf/streams"),
        ("status_endpoint", "/ssf/status"),
        ("add_subject_endpoint", "/ssf/subjects/add"),
        ("remove_subject_endpoint", "/ssf/subjects/remove"),
        ("verification_endpoint", "/ssf/verify"),
    ] {
        assert_eq!(meta[member], format!("{base}{path}"), "{member}");
    }
    assert_eq!(
        meta["authorization_schemes"][0]["spec_urn"],
        "urn:ietf:rfc:6750"
    );
    let keys = jwks(&server).await;
    let key = &keys["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(key.get("d").is_none(), "a private key part in the JWKS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_and_a_poll_receiver_get_every_ending_of_every_reason_as_verified_sets() {
    let server = transmitter_with(|c| {
        // Session cap for one user, expiry for POP.
        c.policy.max_sessions_per_user = 2;
        c.policy.lifetimes.insert(
            sessiond::domain::Kind::Pop,
            Lifetimes {
                idle: Duration::from_secs(1),
                absolute: Duration::from_secs(1),
            },
        );
        c.sweep_interval = Duration::from_millis(200);
        c.signals.push_allow = sessiond::signals::push::AllowList::parse("127.0.0.1").unwrap();
    })
    .await;
    let sessions = server.running.sessions.clone();
    for name in ["cap@example.com", "dis@example.com", "del@example.com"] {
        sessions
            .add_user(name, "example.com", Role::User, "a-long-password-1")
            .await
            .unwrap();
    }
    let stream = poll_stream(&server, "example.com").await;
    // A push receiver of the same org, beside the poll one.
    let (pushed, push_url) = Receiver::start("accept").await;
    let (status, body) = post(
        &format!("{}/ssf/streams", server.rest()),
        SERVICE_SECRET,
        json!({"org": "example.com", "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": push_url}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut c = server.client().await;
    let mut want: HashMap<i64, (&str, Option<&str>)> = HashMap::new();

    let (t, s) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    want.insert(s.id.into(), ("(Logoff)", Some("user")));

    let (a1, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (_, a2) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    c.logoff_other(authed(
        pb::LogoffOtherRequest {
            session_id: a2.id,
            ..Default::default()
        },
        &a1,
    ))
    .await
    .unwrap();
    want.insert(a2.id.into(), ("(LogoffOther)", Some("admin")));

    let (_, imap) = login(&mut c, JOE, Kind::Imap).await;
    assert_eq!(logout_joe(&mut c).await, 1);
    want.insert(imap.id.into(), ("(LogoutUser)", Some("admin")));

    let (_, api) = login(&mut c, JOE, Kind::Api).await;
    c.logout_all(pb::LogoutAllRequest {
        username: DOMAIN_ADMIN.0.into(),
        password: DOMAIN_ADMIN.1.into(),
    })
    .await
    .unwrap();
    want.insert(api.id.into(), ("(LogoutAll)", Some("admin")));

    let (t, s) = login(&mut c, JOE, Kind::Imap).await;
    c.end_user_sessions(authed(
        pb::EndUserSessionsRequest {
            user: JOE.0.into(),
            kinds: vec![],
            keep_current: false,
        },
        &t,
    ))
    .await
    .unwrap();
    want.insert(s.id.into(), ("(EndUserSessions)", None));

    let (t, _) = login(&mut c, JOE, Kind::Imap).await;
    let (_, other) = login(&mut c, JOE, Kind::Imap).await;
    c.change_password(authed(
        pb::ChangePasswordRequest {
            current_password: JOE.1.into(),
            new_password: "joe-pass-2-longer".into(),
        },
        &t,
    ))
    .await
    .unwrap();
    want.insert(other.id.into(), ("password was changed", None));

    let (_, first) = login(&mut c, ("cap@example.com", "a-long-password-1"), Kind::Api).await;
    login(&mut c, ("cap@example.com", "a-long-password-1"), Kind::Api).await;
    login(&mut c, ("cap@example.com", "a-long-password-1"), Kind::Api).await;
    want.insert(first.id.into(), ("limit of live sessions", Some("policy")));

    let (_, s) = login(&mut c, ("dis@example.com", "a-long-password-1"), Kind::Api).await;
    sessions
        .set_disabled("dis@example.com", true)
        .await
        .unwrap();
    want.insert(s.id.into(), ("disabled or deleted", Some("admin")));
    let (_, s) = login(&mut c, ("del@example.com", "a-long-password-1"), Kind::Api).await;
    sessions.delete_user("del@example.com").await.unwrap();
    want.insert(s.id.into(), ("disabled or deleted", Some("admin")));

    let (_, pop) = login(&mut c, (JOE.0, "joe-pass-2-longer"), Kind::Pop).await;
    want.insert(
        pop.id.into(),
        ("idle timeout or its absolute lifetime", Some("system")),
    );

    // Another org's ending: never on this stream.
    let (t, other_org) = login(&mut c, COMPANY_ADMIN, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();

    let got = poll_until(&server, &stream, |got| {
        let seen: Vec<i64> = got
            .values()
            .filter_map(|(_, c)| revoked_session(c))
            .collect();
        want.keys().all(|id| seen.contains(id))
    })
    .await;

    let issuer = server.rest();
    let mut seen = HashMap::new();
    for (jti, (header, claims)) in &got {
        assert_eq!(header["typ"], "secevent+jwt");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(claims["jti"], jti.as_str());
        assert_eq!(claims["iss"], issuer.as_str());
        assert_eq!(claims["aud"], stream["aud"]);
        assert!(claims["iat"].as_i64().is_some());
        assert!(claims.get("sub").is_none() && claims.get("exp").is_none());
        assert_eq!(claims["events"].as_object().unwrap().len(), 1);
        let Some(id) = revoked_session(claims) else {
            continue;
        };
        assert_ne!(
            id,
            i64::from(other_org.id),
            "another org's ending on this stream"
        );
        assert_eq!(claims["sub_id"]["format"], "complex");
        assert_eq!(
            claims["sub_id"]["tenant"],
            json!({"format": "opaque", "id": "example.com"})
        );
        assert_eq!(claims["sub_id"]["user"]["format"], "email");
        assert!(claims["txn"].as_str().is_some());
        let event = &claims["events"][SESSION_REVOKED];
        assert!(event["event_timestamp"].as_i64().is_some());
        assert!(
            seen.insert(id, event.clone()).is_none(),
            "session {id} twice"
        );
    }
    for (id, (why, who)) in &want {
        let event = seen
            .get(id)
            .unwrap_or_else(|| panic!("no SET for session {id}"));
        let text = event["reason_admin"]["en"].as_str().unwrap();
        assert!(
            text.contains(why),
            "session {id}: {text:?} should say {why:?}"
        );
        assert_eq!(event["initiating_entity"].as_str(), *who, "session {id}");
    }

    // The push receiver got the same endings, each SET verified.
    wait_for(
        "every ending at the push receiver",
        || pushed.sets().len() >= want.len(),
        Duration::from_secs(20),
    )
    .await;
    let push_keys = jwks(&server).await;
    let mut by_push = pushed_sessions(&push_keys, &pushed);
    by_push.sort_unstable();
    let mut by_poll: Vec<i64> = seen.keys().copied().collect();
    by_poll.sort_unstable();
    assert_eq!(by_push, by_poll, "push and poll carried the same endings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_is_sent_again_until_acknowledged_and_a_long_poll_wakes_on_an_ending() {
    let server = transmitter().await;
    let stream = poll_stream(&server, "example.com").await;
    let url = stream["delivery"]["endpoint_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut c = server.client().await;

    // A long poll waiting when the ending happens returns with it.
    let waiting = tokio::spawn({
        let url = url.clone();
        async move { post(&url, SERVICE_SECRET, json!({"maxEvents": 10})).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (t, _) = login(&mut c, JOE, Kind::Api).await;
    let started = Instant::now();
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    let (status, first) = waiting.await.unwrap();
    assert_eq!(status, 200, "{first}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let sets = first["sets"].as_object().unwrap().clone();
    assert_eq!(sets.len(), 1);
    assert_eq!(first["moreAvailable"], false);

    // Not acknowledged: the same SET (same jti) again.
    let (_, again) = post(&url, SERVICE_SECRET, json!({"returnImmediately": true})).await;
    assert_eq!(
        again["sets"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        sets.keys().collect::<Vec<_>>()
    );
    // Acknowledged: gone for good.
    let jti = sets.keys().next().unwrap().clone();
    let (_, after) = post(
        &url,
        SERVICE_SECRET,
        json!({"ack": [jti], "returnImmediately": true}),
    )
    .await;
    assert_eq!(after["sets"], json!({}));

    // maxEvents bounds a batch, and says more is available.
    for _ in 0..3 {
        let (t, _) = login(&mut c, JOE, Kind::Api).await;
        c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    }
    let (_, two) = post(
        &url,
        SERVICE_SECRET,
        json!({"maxEvents": 2, "returnImmediately": true}),
    )
    .await;
    assert_eq!(two["sets"].as_object().unwrap().len(), 2);
    assert_eq!(two["moreAvailable"], true);
    // A SET reported in setErrs is not sent again either.
    let jtis: Vec<String> = two["sets"].as_object().unwrap().keys().cloned().collect();
    let (_, rest) = post(
        &url,
        SERVICE_SECRET,
        json!({
            "ack": [jtis[0]],
            "setErrs": {jtis[1].clone(): {"err": "invalid_key", "description": "test"}},
            "returnImmediately": true
        }),
    )
    .await;
    let rest: Vec<&String> = rest["sets"].as_object().unwrap().keys().collect();
    assert_eq!(rest.len(), 1);
    assert!(!jtis.contains(rest[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_its_own_orgs_streams_only_and_others_not_at_all() {
    let server = transmitter().await;
    let base = server.rest();
    let streams = format!("{base}/ssf/streams");
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (other_admin, _) = login(&mut c, COMPANY_ADMIN, Kind::Admin).await;
    let (admin_api, _) = login(&mut c, DOMAIN_ADMIN, Kind::Api).await;
    let (user, _) = login(&mut c, JOE, Kind::Api).await;

    // Nobody, a bad token, a non-admin, an admin's non-console session.
    let (s, body) = call(reqwest::Method::GET, &streams, None, None).await;
    assert_eq!(
        (s, body["err"].as_str()),
        (401, Some("authentication_failed"))
    );
    assert_eq!(
        call(reqwest::Method::GET, &streams, Some("nope"), None)
            .await
            .0,
        401
    );
    assert_eq!(
        call(reqwest::Method::GET, &streams, Some(&user), None)
            .await
            .0,
        401
    );
    assert_eq!(
        call(reqwest::Method::GET, &streams, Some(&admin_api), None)
            .await
            .0,
        401
    );

    // An admin's stream is of its org, whatever it asks.
    let (s, mine) = post(&streams, &admin, json!({"description": "mine"})).await;
    assert_eq!(s, 201, "{mine}");
    let id = mine["stream_id"].as_str().unwrap().to_owned();
    let (s, body) = post(&streams, &admin, json!({"org": "company.com"})).await;
    assert_eq!(s, 403, "{body}");

    // The other org's admin sees nothing of it: 404 everywhere, as if absent.
    let (s, list) = call(reqwest::Method::GET, &streams, Some(&other_admin), None).await;
    assert_eq!((s, list), (200, json!([])));
    let q = format!("{streams}?stream_id={id}");
    assert_eq!(
        call(reqwest::Method::GET, &q, Some(&other_admin), None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(reqwest::Method::DELETE, &q, Some(&other_admin), None)
            .await
            .0,
        404
    );
    let status_q = format!("{base}/ssf/status?stream_id={id}");
    assert_eq!(
        call(reqwest::Method::GET, &status_q, Some(&other_admin), None)
            .await
            .0,
        404
    );
    for (path, body) in [
        ("/ssf/verify", json!({"stream_id": id})),
        ("/ssf/status", json!({"stream_id": id, "status": "paused"})),
        (
            "/ssf/subjects/add",
            json!({"stream_id": id, "subject": {"format": "email", "email": JOE.0}}),
        ),
        (
            &format!("/ssf/poll/{id}"),
            json!({"returnImmediately": true}),
        ),
    ] {
        let (s, b) = post(&format!("{base}{path}"), &other_admin, body).await;
        assert_eq!(s, 404, "{path}: {b}");
    }
    let (s, b) = call(
        reqwest::Method::PATCH,
        &streams,
        Some(&other_admin),
        Some(json!({"stream_id": id, "description": "x"})),
    )
    .await;
    assert_eq!(s, 404, "{b}");

    // Its owner reads it; the service credential too.
    let (s, read) = call(reqwest::Method::GET, &q, Some(&admin), None).await;
    assert_eq!((s, read["description"].as_str()), (200, Some("mine")));
    let (s, all) = call(reqwest::Method::GET, &streams, Some(SERVICE_SECRET), None).await;
    assert_eq!((s, all.as_array().map(Vec::len)), (200, Some(1)));

    // The other org's events never reach this stream.
    let (t, _) = login(&mut c, COMPANY_ADMIN, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    let (s, polled) = post(
        &format!("{base}/ssf/poll/{id}"),
        &admin,
        json!({"returnImmediately": true}),
    )
    .await;
    assert_eq!((s, polled["sets"].clone()), (200, json!({})));

    // The owner deletes it: 204, then 404.
    assert_eq!(
        call(reqwest::Method::DELETE, &q, Some(&admin), None)
            .await
            .0,
        204
    );
    assert_eq!(
        call(reqwest::Method::GET, &q, Some(&admin), None).await.0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stream_requests_get_a_clear_400_and_create_nothing() {
    let server = transmitter_with(|c| {
        c.signals.max_streams_per_org = 2;
        c.signals.push_allow = sessiond::signals::push::AllowList::parse("127.0.0.1").unwrap();
    })
    .await;
    let base = server.rest();
    let streams = format!("{base}/ssf/streams");
    let long = "x".repeat(5000);
    for (body, says) in [
        (json!([1]), "JSON object"),
        (json!({"org": 5}), "org"),
        (json!({"events_requested": "x"}), "events_requested"),
        (json!({"events_requested": [1]}), "events_requested"),
        (json!({"delivery": "push"}), "delivery"),
        (
            json!({"delivery": {"method": "urn:example:smoke-signals"}}),
            "not supported",
        ),
        (
            json!({"delivery": {"method": "urn:ietf:rfc:8935"}}),
            "endpoint_url",
        ),
        (
            json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "ftp://127.0.0.1/x"}}),
            "http",
        ),
        // Outside the operator's allow-list (another loopback address).
        (
            json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "http://127.0.0.2:9/x"}}),
            "allowed",
        ),
        (
            json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "http://127.0.0.1:9/x", "authorization_header": "a\nb"}}),
            "authorization_header",
        ),
        (json!({"description": long}), "longer"),
        (json!({"default_subjects": "SOME"}), "default_subjects"),
    ] {
        let (s, b) = post(&streams, SERVICE_SECRET, body.clone()).await;
        assert_eq!(s, 400, "{body}: {b}");
        assert_eq!(b["err"], "invalid_request");
        assert!(
            b["description"].as_str().unwrap().contains(says),
            "{body}: {b}"
        );
    }
    let resp = http()
        .post(&streams)
        .bearer_auth(SERVICE_SECRET)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = http()
        .post(&streams)
        .bearer_auth(SERVICE_SECRET)
        .body(vec![b' '; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let (_, all) = call(reqwest::Method::GET, &streams, Some(SERVICE_SECRET), None).await;
    assert_eq!(all, json!([]), "a refused request created a stream");

    // A push stream inside the allow-list is fine; the limit is per org.
    let (s, push) = post(
        &streams,
        SERVICE_SECRET,
        json!({"org": "example.com", "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "http://127.0.0.1:9/x", "authorization_header": "Bearer receiver-secret"}}),
    )
    .await;
    assert_eq!(s, 201, "{push}");
    assert!(!push.to_string().contains("receiver-secret"));
    assert_eq!(
        post(&streams, SERVICE_SECRET, json!({"org": "example.com"}))
            .await
            .0,
        201
    );
    let (s, b) = post(&streams, SERVICE_SECRET, json!({"org": "example.com"})).await;
    assert_eq!((s, b["err"].as_str()), (409, Some("too_many_streams")));
    assert_eq!(
        post(&streams, SERVICE_SECRET, json!({"org": "company.com"}))
            .await
            .0,
        201
    );

    // Transmitter-supplied members cannot be changed; unknown streams 404.
    let id = push["stream_id"].as_str().unwrap();
    let (s, b) = call(
        reqwest::Method::PATCH,
        &streams,
        Some(SERVICE_SECRET),
        Some(json!({"stream_id": id, "aud": "someone-else"})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (s, _) = call(
        reqwest::Method::PATCH,
        &streams,
        Some(SERVICE_SECRET),
        Some(json!({"stream_id": "0000", "description": "x"})),
    )
    .await;
    assert_eq!(s, 404);
    // A push stream has no poll endpoint.
    let (s, _) = post(
        &format!("{}/ssf/poll/{id}", server.rest()),
        SERVICE_SECRET,
        json!({}),
    )
    .await;
    assert_eq!(s, 400);
    // Bad poll requests.
    let polled = post(&streams, SERVICE_SECRET, json!({"org": "company.com"}))
        .await
        .1;
    let poll_url = polled["delivery"]["endpoint_url"].as_str().unwrap();
    for body in [
        json!({"maxEvents": -1}),
        json!({"maxEvents": "10"}),
        json!({"returnImmediately": "yes"}),
        json!({"ack": "x"}),
        json!({"ack": [1]}),
        json!({"setErrs": {"j": "broken"}}),
        json!({"setErrs": []}),
    ] {
        let (s, b) = post(poll_url, SERVICE_SECRET, body.clone()).await;
        assert_eq!(s, 400, "{body}: {b}");
    }

    // Paths that are not UTF-8 and methods no route takes: the same JSON
    // error shape, and no 400 before authentication.
    let (s405, b405) = call(
        reqwest::Method::DELETE,
        &format!("{base}/ssf/status"),
        Some(SERVICE_SECRET),
        None,
    )
    .await;
    assert_eq!(
        (s405, b405["err"].as_str()),
        (405, Some("invalid_request")),
        "{b405}"
    );
    let (s405, _) = call(
        reqwest::Method::GET,
        &format!("{base}/global-token-revocation"),
        None,
        None,
    )
    .await;
    assert_eq!(s405, 405);
    let bad_id = format!("{base}/ssf/poll/%FF");
    assert_eq!(
        call(reqwest::Method::POST, &bad_id, None, None).await.0,
        401
    );
    let (s404, b404) = call(reqwest::Method::POST, &bad_id, Some(SERVICE_SECRET), None).await;
    assert_eq!(
        (s404, b404["err"].as_str()),
        (404, Some("not_found")),
        "{b404}"
    );
    let (s404, _) = call(
        reqwest::Method::GET,
        &format!("{base}/.well-known/ssf-configuration/%FF"),
        None,
        None,
    )
    .await;
    assert_eq!(s404, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_replace_status_subjects_and_verification_follow_ssf() {
    let server = transmitter().await;
    let base = server.rest();
    let stream = poll_stream(&server, "example.com").await;
    let id = stream["stream_id"].as_str().unwrap().to_owned();
    let poll = stream["delivery"]["endpoint_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut c = server.client().await;

    // PATCH changes what it names; PUT replaces every receiver-supplied member.
    let (s, patched) = call(
        reqwest::Method::PATCH,
        &format!("{base}/ssf/streams"),
        Some(SERVICE_SECRET),
        Some(json!({"stream_id": id, "description": "patched", "iss": stream["iss"]})),
    )
    .await;
    assert_eq!((s, patched["description"].as_str()), (200, Some("patched")));
    assert_eq!(patched["events_delivered"], stream["events_delivered"]);
    let (s, replaced) = call(
        reqwest::Method::PUT,
        &format!("{base}/ssf/streams"),
        Some(SERVICE_SECRET),
        Some(json!({"stream_id": id, "events_requested": [SESSION_REVOKED]})),
    )
    .await;
    assert_eq!(s, 200, "{replaced}");
    assert!(replaced.get("description").is_none());
    assert_eq!(replaced["delivery"]["method"], "urn:ietf:rfc:8936");

    // Verification: 204, a SET carrying the state, then 429 within the interval.
    let (s, _) = post(
        &format!("{base}/ssf/verify"),
        SERVICE_SECRET,
        json!({"stream_id": id, "state": "abc"}),
    )
    .await;
    assert_eq!(s, 204);
    let (s, b) = post(
        &format!("{base}/ssf/verify"),
        SERVICE_SECRET,
        json!({"stream_id": id}),
    )
    .await;
    assert_eq!(s, 429, "{b}");
    let got = poll_until(&server, &stream, |g| {
        g.values()
            .any(|(_, c)| c["events"].get(VERIFICATION).is_some())
    })
    .await;
    let (_, v) = got
        .values()
        .find(|(_, c)| c["events"].get(VERIFICATION).is_some())
        .unwrap();
    assert_eq!(v["events"][VERIFICATION]["state"], "abc");
    assert_eq!(v["sub_id"], json!({"format": "opaque", "id": id}));

    // Paused: events are held, and delivered on resume.
    let status = format!("{base}/ssf/status");
    let (s, b) = post(
        &status,
        SERVICE_SECRET,
        json!({"stream_id": id, "status": "paused", "reason": "maintenance"}),
    )
    .await;
    assert_eq!(
        (s, b["status"].as_str(), b["reason"].as_str()),
        (200, Some("paused"), Some("maintenance"))
    );
    let (_, b) = call(
        reqwest::Method::GET,
        &format!("{status}?stream_id={id}"),
        Some(SERVICE_SECRET),
        None,
    )
    .await;
    assert_eq!(b["status"], "paused");
    let (t, held) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    let got = poll_until(&server, &stream, |g| {
        g.values()
            .any(|(_, c)| c["events"].get(STREAM_UPDATED).is_some())
    })
    .await;
    assert!(
        got.values().all(|(_, c)| revoked_session(c).is_none()),
        "a SET sent while paused"
    );
    let (_, upd) = got
        .values()
        .find(|(_, c)| c["events"].get(STREAM_UPDATED).is_some())
        .unwrap();
    assert_eq!(
        upd["events"][STREAM_UPDATED],
        json!({"status": "paused", "reason": "maintenance"})
    );
    post(
        &status,
        SERVICE_SECRET,
        json!({"stream_id": id, "status": "enabled"}),
    )
    .await;
    let got = poll_until(&server, &stream, |g| {
        g.values()
            .any(|(_, c)| revoked_session(c) == Some(held.id.into()))
    })
    .await;
    assert!(!got.is_empty());

    // Disabled: events are not held.
    post(
        &status,
        SERVICE_SECRET,
        json!({"stream_id": id, "status": "disabled"}),
    )
    .await;
    let (t, dropped) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    post(
        &status,
        SERVICE_SECRET,
        json!({"stream_id": id, "status": "enabled"}),
    )
    .await;
    let (t, after) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    let got = poll_until(&server, &stream, |g| {
        g.values()
            .any(|(_, c)| revoked_session(c) == Some(after.id.into()))
    })
    .await;
    assert!(got
        .values()
        .all(|(_, c)| revoked_session(c) != Some(dropped.id.into())));

    // A removed subject's endings are not carried; added back, they are.
    let (s, _) = post(
        &format!("{base}/ssf/subjects/remove"),
        SERVICE_SECRET,
        json!({"stream_id": id, "subject": {"format": "email", "email": JOE.0}}),
    )
    .await;
    assert_eq!(s, 204);
    let (t, _) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    // The feed moves past it; the stream carries nothing of it.
    let (_, b) = post(&poll, SERVICE_SECRET, json!({"returnImmediately": true})).await;
    assert_eq!(b["sets"], json!({}));
    let (s, _) = post(
        &format!("{base}/ssf/subjects/add"),
        SERVICE_SECRET,
        json!({"stream_id": id, "subject": {"format": "complex", "user": {"format": "email", "email": JOE.0}}, "verified": true}),
    )
    .await;
    assert_eq!(s, 200);
    let (t, back) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    let got = poll_until(&server, &stream, |g| {
        g.values()
            .any(|(_, c)| revoked_session(c) == Some(back.id.into()))
    })
    .await;
    assert_eq!(
        got.values()
            .filter(|(_, c)| revoked_session(c).is_some())
            .count(),
        1
    );
    let (s, b) = post(
        &format!("{base}/ssf/subjects/add"),
        SERVICE_SECRET,
        json!({"stream_id": id, "subject": {"format": "phone_number", "phone_number": "+1"}}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_signing_keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = sessiond::store::StoreUrl::SqliteFile(dir.path().join("s.db"));
    let start = || {
        let store = store.clone();
        transmitter_with(move |c| c.store = store)
    };
    let server = start().await;
    let stream = poll_stream(&server, "example.com").await;
    let keys = jwks(&server).await;
    let mut c = server.client().await;
    let (t, s) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    drop(c);
    server.running.shutdown().await.unwrap();

    let server = start().await;
    assert_eq!(jwks(&server).await, keys, "a new key after a restart");
    let id = stream["stream_id"].as_str().unwrap();
    // The issuer is the new listener's: read the stream's poll URL again.
    let (status, now) = call(
        reqwest::Method::GET,
        &format!("{}/ssf/streams?stream_id={id}", server.rest()),
        Some(SERVICE_SECRET),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let got = poll_until(&server, &now, |g| {
        g.values()
            .any(|(_, c)| revoked_session(c) == Some(s.id.into()))
    })
    .await;
    assert_eq!(got.len(), 1);
}

/// A push receiver started by the test: records every SET it is sent (with
/// the request's content type and authorization), answering as `mode` says.
#[derive(Clone, Default)]
pub struct Receiver {
    pub got: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
    pub mode: std::sync::Arc<std::sync::Mutex<&'static str>>,
}

impl Receiver {
    pub async fn start(mode: &'static str) -> (Self, String) {
        use axum::http::{HeaderMap, StatusCode};
        let r = Receiver::default();
        *r.mode.lock().unwrap() = mode;
        let state = r.clone();
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    let mode = *state.mode.lock().unwrap();
                    match mode {
                        "hang" => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            StatusCode::ACCEPTED.into_response()
                        }
                        "down" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                        "slow" => {
                            tokio::time::sleep(Duration::from_millis(3)).await;
                            state.got.lock().unwrap().push((
                                body,
                                h("content-type"),
                                h("authorization"),
                            ));
                            StatusCode::ACCEPTED.into_response()
                        }
                        "refuse" => {
                            state.got.lock().unwrap().push((
                                body,
                                h("content-type"),
                                h("authorization"),
                            ));
                            (
                                StatusCode::BAD_REQUEST,
                                axum::Json(
                                    json!({"err": "invalid_audience", "description": "not ours"}),
                                ),
                            )
                                .into_response()
                        }
                        _ => {
                            state.got.lock().unwrap().push((
                                body,
                                h("content-type"),
                                h("authorization"),
                            ));
                            StatusCode::ACCEPTED.into_response()
                        }
                    }
                }
            }),
        );
        use axum::response::IntoResponse as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, url)
    }

    pub fn sets(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(b, ..)| b.clone())
            .collect()
    }
}

async fn push_stream(server: &TestServer, url: &str) -> Value {
    let (status, body) = post(
        &format!("{}/ssf/streams", server.rest()),
        SERVICE_SECRET,
        json!({"org": "example.com", "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": url, "authorization_header": "Bearer receiver-secret"}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

/// The sessions whose session-revoked SETs `r` holds, each SET verified.
pub fn pushed_sessions(server_jwks: &Value, r: &Receiver) -> Vec<i64> {
    let sets: BTreeMap<String, String> = r
        .sets()
        .into_iter()
        .enumerate()
        .map(|(i, s)| (format!("{i:08}"), s))
        .collect();
    verify(server_jwks, &sets)
        .values()
        .filter_map(|(_, c)| revoked_session(c))
        .collect()
}

pub async fn wait_for(what: &str, mut ok: impl FnMut() -> bool, within: Duration) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_receivers_get_every_set_in_order_and_a_hanging_one_delays_no_other() {
    let server = transmitter_with(|c| {
        c.signals.push_allow = sessiond::signals::push::AllowList::parse("127.0.0.1").unwrap();
    })
    .await;
    let (good, good_url) = Receiver::start("accept").await;
    let (_hung, hung_url) = Receiver::start("hang").await;
    push_stream(&server, &good_url).await;
    push_stream(&server, &hung_url).await;
    let keys = jwks(&server).await;
    let mut c = server.client().await;
    let mut ended = Vec::new();
    for _ in 0..10 {
        let (t, s) = login(&mut c, JOE, Kind::Api).await;
        c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
        ended.push(i64::from(s.id));
    }
    wait_for(
        "10 pushed SETs",
        || good.sets().len() >= 10,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        pushed_sessions(&keys, &good),
        ended,
        "not every SET, or not in order"
    );
    let got = good.got.lock().unwrap().clone();
    assert!(got
        .iter()
        .all(|(_, ct, auth)| ct == "application/secevent+jwt" && auth == "Bearer receiver-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_gets_everything_once_back_and_a_refused_set_is_recorded_not_retried() {
    let server = transmitter_with(|c| {
        c.signals.push_allow = sessiond::signals::push::AllowList::parse("127.0.0.0/8").unwrap();
    })
    .await;
    let (r, url) = Receiver::start("down").await;
    let stream = push_stream(&server, &url).await;
    let id = stream["stream_id"].as_str().unwrap().to_owned();
    let keys = jwks(&server).await;
    let mut c = server.client().await;
    let mut ended = Vec::new();
    for _ in 0..5 {
        let (t, s) = login(&mut c, JOE, Kind::Api).await;
        c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
        ended.push(i64::from(s.id));
    }
    let status_url = format!("{}/ssf/status?stream_id={id}", server.rest());
    let mut last_error = String::new();
    for _ in 0..100 {
        let (_, s) = call(
            reqwest::Method::GET,
            &status_url,
            Some(SERVICE_SECRET),
            None,
        )
        .await;
        last_error = s["last_error"].as_str().unwrap_or("").to_owned();
        if last_error.contains("503") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last_error.contains("HTTP 503"), "{last_error:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    *r.mode.lock().unwrap() = "accept";
    wait_for(
        "every SET after the outage",
        || r.sets().len() >= 5,
        Duration::from_secs(40),
    )
    .await;
    assert_eq!(pushed_sessions(&keys, &r), ended);

    // A 400: recorded on the stream, not sent again; the next SET follows.
    *r.mode.lock().unwrap() = "refuse";
    let (t, _) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    wait_for(
        "the refused SET",
        || r.sets().len() >= 6,
        Duration::from_secs(20),
    )
    .await;
    *r.mode.lock().unwrap() = "accept";
    let (t, next) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    wait_for(
        "the SET after it",
        || r.sets().len() >= 7,
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sessions = pushed_sessions(&keys, &r);
    assert_eq!(
        sessions.len(),
        7,
        "the refused SET was retried: {sessions:?}"
    );
    assert_eq!(sessions.last(), Some(&i64::from(next.id)));
    let (_, s) = call(
        reqwest::Method::GET,
        &status_url,
        Some(SERVICE_SECRET),
        None,
    )
    .await;
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("invalid_audience"),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_resume_after_a_restart_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = sessiond::store::StoreUrl::SqliteFile(dir.path().join("s.db"));
    let start = || {
        let store = store.clone();
        transmitter_with(move |c| {
            c.store = store;
            c.signals.push_allow = sessiond::signals::push::AllowList::parse("127.0.0.1").unwrap();
        })
    };
    let (r, url) = Receiver::start("down").await;
    let server = start().await;
    push_stream(&server, &url).await;
    let keys = jwks(&server).await;
    let mut c = server.client().await;
    let mut ended = Vec::new();
    for _ in 0..3 {
        let (t, s) = login(&mut c, JOE, Kind::Api).await;
        c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
        ended.push(i64::from(s.id));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(c);
    server.running.shutdown().await.unwrap();
    // Back up while sessiond is down; a new process delivers everything.
    *r.mode.lock().unwrap() = "accept";
    let server = start().await;
    wait_for(
        "every SET after the restart",
        || r.sets().len() >= 3,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(pushed_sessions(&keys, &r), ended);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_adds_a_signing_key_and_keeps_the_old_one_published() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store = sessiond::store::StoreUrl::SqliteFile(db.clone());
    let server = transmitter_with(move |c| {
        c.store = store;
        c.signals.key_refresh = Duration::from_millis(200);
        // Sign with a new key as soon as it is published (in production,
        // only once receivers' cached JWKS can hold it).
        c.signals.keys = sessiond::signals::keys::KeySource::Store {
            grace: sessiond::signals::keys::DEFAULT_GRACE,
            ahead: Duration::ZERO,
        };
    })
    .await;
    let stream = poll_stream(&server, "example.com").await;
    let before = jwks(&server).await;
    let old_kid = before["keys"][0]["kid"].as_str().unwrap().to_owned();
    assert_eq!(before["keys"].as_array().unwrap().len(), 1);

    let keys = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessiond"))
            .arg("keys")
            .args(args)
            .arg("--store")
            .arg(format!("sqlite://{}", db.display()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, out) = keys(&["rotate"]);
    assert!(ok, "{out}");
    assert!(!out.contains("PRIVATE"), "{out}");
    let (ok, listed) = keys(&["list"]);
    assert!(ok, "{listed}");
    assert!(listed.contains(&format!("{old_kid}\tsigning")), "{listed}");
    let new_kid = listed
        .lines()
        .find(|l| l.contains("\tnext\t"))
        .and_then(|l| l.split('\t').next())
        .unwrap()
        .to_owned();
    assert_ne!(new_kid, old_kid);

    // Within the refresh, the JWKS holds both and new SETs use the new key.
    let mut after = jwks(&server).await;
    for _ in 0..50 {
        if after["keys"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = jwks(&server).await;
    }
    let kids: Vec<&str> = after["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [old_kid.as_str(), new_kid.as_str()]);
    let mut c = server.client().await;
    let (t, s) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    let got = poll_until(&server, &stream, |g| {
        g.values()
            .any(|(_, c)| revoked_session(c) == Some(s.id.into()))
    })
    .await;
    let (header, _) = got
        .values()
        .find(|(_, c)| revoked_session(c) == Some(s.id.into()))
        .unwrap();
    assert_eq!(header["kid"], new_kid.as_str(), "{header}");

    // A bad grace period is refused with its reason, changing nothing.
    let (ok, out) = keys(&["rotate", "--ssf-key-grace-secs", "0"]);
    assert!(!ok && out.contains("ssf_key_grace_secs"), "{out}");
    let (_, again) = keys(&["list"]);
    assert_eq!(again.lines().count(), 2, "{again}");
}

/// Server-side request forgery: an admin cannot make sessiond call an
/// address the operator did not allow, not by creating, updating or
/// replacing a stream; a refused change leaves the stream as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_cannot_point_a_push_stream_outside_the_allow_list() {
    let server = transmitter_with(|c| {
        c.signals.push_allow = sessiond::signals::push::AllowList::parse("127.0.0.1").unwrap();
    })
    .await;
    let streams = format!("{}/ssf/streams", server.rest());
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let push =
        |url: &str| json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": url}});
    for outside in [
        "http://127.0.0.2:9/x",
        "http://localhost:9/x",
        "http://127.0.0.1.nip.io/x",
        "http://[::1]:9/x",
        "http://2130706434/x",
        "file:///etc/passwd",
    ] {
        let (s, b) = post(&streams, &admin, push(outside)).await;
        assert_eq!(s, 400, "{outside}: {b}");
    }
    let (_, url) = Receiver::start("accept").await;
    let (s, made) = post(&streams, &admin, push(&url)).await;
    assert_eq!(s, 201, "{made}");
    let id = made["stream_id"].as_str().unwrap();
    for method in [reqwest::Method::PATCH, reqwest::Method::PUT] {
        let (s, b) = call(
            method.clone(),
            &streams,
            Some(&admin),
            Some(json!({"stream_id": id, "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "http://127.0.0.2:9/x"}})),
        )
        .await;
        assert_eq!(s, 400, "{method}: {b}");
    }
    let (s, now) = call(
        reqwest::Method::GET,
        &format!("{streams}?stream_id={id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(now["delivery"]["endpoint_url"], url.as_str());
}
