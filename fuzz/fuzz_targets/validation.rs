//! Request validation: every field validator, the token parser, and the
//! protobuf decoding of every request message, on arbitrary input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sessiond::domain::{limits, Token};
use sessiond::pb;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(name) = limits::username("u", text) {
            assert!(name.len() <= limits::MAX_USERNAME);
            assert_eq!(limits::username("u", &name).ok(), Some(name.clone()));
        }
        let _ = limits::mailbox("user", text);
        let _ = limits::password("password", text);
        let _ = limits::org(text);
        let _ = limits::optional_text("client.address", text, limits::MAX_CLIENT_ADDRESS);
        if let Ok(t) = Token::parse(text) {
            assert_eq!(t.as_str().len(), 43);
            let _ = t.digest();
        }
    }
    let _ = pb::LoginRequest::decode(data);
    let _ = pb::ValidateSessionRequest::decode(data);
    let _ = pb::LogoffOtherRequest::decode(data);
    let _ = pb::LogoutUserRequest::decode(data);
    let _ = pb::LogoutAllRequest::decode(data);
    let _ = pb::ListSessionsRequest::decode(data);
    let _ = pb::WatchRevocationsRequest::decode(data);
    let _ = pb::ListAuditRecordsRequest::decode(data);
});
