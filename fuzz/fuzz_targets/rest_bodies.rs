//! Every REST body parser, on arbitrary bytes and content types: none may
//! panic, and whatever they accept is well-formed for its gRPC call.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessiond::rest::{informatica, oma, parse_json, ras};

const CONTENT_TYPES: [Option<&str>; 5] = [
    None,
    Some("application/json"),
    Some("application/json; api-version=1.0"),
    Some("application/json; api-version=2.0"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let (ct, body) = match data.split_first() {
        Some((b, rest)) => (CONTENT_TYPES[usize::from(*b) % CONTENT_TYPES.len()], rest),
        None => (None, data),
    };
    let mut headers = http::HeaderMap::new();
    if let Some(ct) = ct {
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
    }
    let bytes = bytes::Bytes::copy_from_slice(body);
    if let Ok(logon) = ras::parse_logon(&headers, Ok(bytes.clone())) {
        assert!(serde_json_ok(body), "accepted a body that is not JSON: {logon:?}");
    }
    for kind in ["login", "logout"] {
        let _ = informatica::credentials_body(&headers, Ok(bytes.clone()), kind);
    }
    if let Ok(value) = parse_json(Ok(bytes)) {
        if let Ok(req) = oma::logout_user_request(&value) {
            assert!(req.credentials.is_some_and(|c| c.secret.is_some()));
        }
    }
});

fn serde_json_ok(body: &[u8]) -> bool {
    sessiond::rest::parse_json(Ok(bytes::Bytes::copy_from_slice(body))).is_ok()
}
