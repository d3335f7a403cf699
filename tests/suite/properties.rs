//! Property tests (proptest), part of the normal test command: generated
//! input against the real server's REST routes and gRPC service, and against
//! the validation rules themselves. Every case needs a well-shaped answer
//! from the same running server, so a crash or a hang fails the property.

use sessiond::domain::rate::Rate;
use std::sync::OnceLock;

use crate::support::*;
use proptest::prelude::*;
use serde_json::Value;
use sessiond::domain::{limits, Token};
use sessiond::pb;
use tonic::Code;

/// One server (with the REST shim) for all the properties of this file, on
/// its own runtime, so each generated case is a real request.
struct Shared {
    rt: tokio::runtime::Runtime,
    server: TestServer,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(TestServer::start_rest_with(|c| {
            // Generated credentials fail by the thousand: keep lockouts away.
            c.policy.throttle_user.max_failures = u32::MAX;
            c.policy.throttle_address.max_failures = u32::MAX;
            // Thousands of calls from one address: keep the call rates away too.
            c.policy.login_rate_address = Rate::per_minute(0);
            c.policy.ending_rate_address = Rate::per_minute(0);
        }));
        Shared { rt, server }
    })
}

const BODY_ROUTES: [(&str, &str); 4] = [
    ("/api/Session/logon", "ras"),
    ("/api/logout_user", "oma"),
    ("/ma/api/v2/user/login", "informatica"),
    ("/ma/api/v2/user/logoutall", "informatica"),
];

/// The answer is in the vendor's shape, and never a server error.
fn assert_vendor_answer(vendor: &str, status: u16, body: &Value) -> Result<(), TestCaseError> {
    prop_assert!(status < 500, "{vendor} answered {status}: {body}");
    match vendor {
        "ras" if status >= 400 => {
            prop_assert_eq!(&body["status"], &Value::from(status));
            prop_assert!(body["title"].is_string() && body["type"].is_string());
        }
        "oma" => {
            prop_assert!(body["success"].is_boolean(), "{}", body);
            if body["success"] == false {
                prop_assert!(body["error_number"].is_u64());
            }
        }
        "informatica" if status >= 400 => {
            prop_assert_eq!(&body["@type"], &Value::from("error"));
            prop_assert_eq!(&body["statusCode"], &Value::from(status));
        }
        _ => {}
    }
    Ok(())
}

fn post(path: &str, body: Vec<u8>) -> (u16, Value) {
    let s = shared();
    let base = s.server.rest();
    s.rt.block_on(async move {
        let resp = http()
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, _, body) = json_of(resp).await;
        (status, body)
    })
}

/// Arbitrary JSON, biased towards the field names the routes look for.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        prop_oneof![
            Just("domain_admin@example.com"),
            Just("joe_user@example.com"),
            Just("pencil75"),
            Just("login"),
            Just("logout"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            Just("username".to_owned()),
            Just("password".to_owned()),
            Just("credentials".to_owned()),
            Just("user".to_owned()),
            Just("token".to_owned()),
            Just("client".to_owned()),
            Just("@type".to_owned()),
            "[a-z@]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Any bytes at all: answered in shape, never a 5xx.
    #[test]
    fn rest_routes_answer_any_bytes_in_shape(body in prop::collection::vec(any::<u8>(), 0..512), route in 0..4usize) {
        let (path, vendor) = BODY_ROUTES[route];
        let (status, answer) = post(path, body);
        assert_vendor_answer(vendor, status, &answer)?;
    }

    /// Any JSON document (biased to the real field names): answered in shape.
    #[test]
    fn rest_routes_answer_any_json_in_shape(doc in arb_json(), route in 0..4usize) {
        let (path, vendor) = BODY_ROUTES[route];
        let (status, answer) = post(path, doc.to_string().into_bytes());
        assert_vendor_answer(vendor, status, &answer)?;
        if vendor == "oma" {
            prop_assert_eq!(status, 200, "well-formed JSON is always 200 on OpenSRS");
        }
    }

    /// Any field values over gRPC: a documented code, never INTERNAL/UNKNOWN,
    /// and never a session for credentials that are not the demo ones.
    #[test]
    fn grpc_fields_never_cause_an_internal_error(
        username in "\\PC{0,300}|[a-z_@.]{0,30}",
        password in "\\PC{0,40}",
        kind in -2i32..8,
        mailbox in "\\PC{0,60}",
        session_id in any::<i32>(),
    ) {
        let s = shared();
        let url = s.server.url();
        let (codes, logged_in) = s.rt.block_on(async move {
            let mut c = connect(&url).await;
            let login = c.login(pb::LoginRequest {
                username: username.clone(),
                password: password.clone(),
                kind,
                client: None,
            }).await;
            let logged_in = login.is_ok();
            let logout = c.logout_user(pb::LogoutUserRequest {
                credentials: Some(pb::Credentials {
                    user: username.clone(),
                    secret: Some(pb::credentials::Secret::Password(password.clone())),
                    client: String::new(),
                }),
                user: mailbox,
            }).await;
            // Generated text as a bearer token (when it fits in a header at all).
            let mut req = tonic::Request::new(pb::LogoffOtherRequest { session_id, ..Default::default() });
            if let Ok(v) = format!("Bearer {password}").parse() {
                req.metadata_mut().insert("authorization", v);
            }
            let other = c.logoff_other(req).await;
            let all = c.logout_all(pb::LogoutAllRequest { username, password }).await;
            let codes: Vec<Code> = [
                login.map(|_| ()),
                logout.map(|_| ()),
                other.map(|_| ()),
                all.map(|_| ()),
            ]
            .into_iter()
            .map(|r| r.err().map_or(Code::Ok, |s| s.code()))
            .collect();
            (codes, logged_in)
        });
        prop_assert!(!logged_in, "a generated credential logged in");
        for code in codes {
            prop_assert!(
                matches!(code, Code::Ok | Code::InvalidArgument | Code::Unauthenticated
                    | Code::PermissionDenied | Code::NotFound),
                "unexpected {:?}", code
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// A username that passes is in normal form, within limits, and stable.
    #[test]
    fn usernames_normalize_once_and_stay_within_limits(raw in "\\PC{0,300}") {
        if let Ok(name) = limits::username("u", &raw) {
            // The stored form is what must fit (found by this property:
            // lower-casing can lengthen a string).
            prop_assert!(!name.is_empty() && name.len() <= limits::MAX_USERNAME);
            prop_assert!(!name.chars().any(|c| c.is_whitespace() || c.is_control()));
            prop_assert_eq!(limits::username("u", &name).ok(), Some(name.clone()));
        }
    }

    /// A mailbox that passes has exactly one @ with text on both sides.
    #[test]
    fn mailboxes_have_one_at_with_both_sides(raw in "[a-zA-Z0-9@._-]{0,40}") {
        if let Ok(m) = limits::mailbox("user", &raw) {
            let (local, domain) = m.split_once('@').unwrap();
            prop_assert!(!local.is_empty() && !domain.is_empty() && !domain.contains('@'));
        }
    }

    /// Only 43-character base64url texts of 32 bytes parse as tokens, and the
    /// parser never panics.
    #[test]
    fn tokens_parse_only_in_their_one_shape(raw in "\\PC{0,60}|[A-Za-z0-9_-]{43}") {
        if Token::parse(&raw).is_ok() {
            prop_assert_eq!(raw.len(), 43);
            prop_assert!(raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }

    /// Bytes that are not JSON never reach gRPC: the shim's parser refuses
    /// them (and never panics).
    #[test]
    fn the_json_parser_refuses_what_serde_refuses(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let parsed = sessiond::rest::parse_json(Ok(bytes::Bytes::from(bytes.clone())));
        let serde_ok = serde_json::from_slice::<Value>(&bytes).is_ok();
        prop_assert_eq!(parsed.is_ok(), serde_ok && !bytes.iter().all(u8::is_ascii_whitespace));
    }
}

#[test]
fn generated_tokens_always_parse() {
    for _ in 0..10_000 {
        let t = Token::generate().unwrap();
        assert_eq!(Token::parse(t.as_str()).unwrap().digest(), t.digest());
    }
}
