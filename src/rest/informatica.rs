//! Informatica Cloud REST API v2: `user/login`, `user/logout` (header
//! `icSessionId`) and `user/logoutall`. Errors are
//! `{"@type": "error", code, description, statusCode}` with statusCode equal to
//! the HTTP status; logoutall answers `{"@type": "success", description}`.

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};

use super::{check_json_content_type, parse_json, retry_after, string_field};
use super::{BodyError, Caller, Reachable, RestState};
use crate::pb;
use crate::wire::Reason;

/// Informatica's code for bad credentials, with its documented text.
const BAD_CREDENTIALS: (&str, &str) = ("UI_10000", "User name or password is not valid.");

pub fn routes() -> Router<RestState> {
    Router::new()
        .route("/ma/api/v2/user/login", post(login))
        .route("/saas/api/v2/user/logout", post(logout))
        .route("/api/v2/user/logout", post(logout))
        .route("/ma/api/v2/user/logoutall", post(logout_all))
        .route("/saas/api/v2/user/logoutall", post(logout_all))
        .route("/api/v2/user/logoutall", post(logout_all))
}

/// An error object; `statusCode` is the HTTP status.
pub fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(json!({
            "@type": "error",
            "code": code,
            "description": description,
            "statusCode": status.as_u16(),
        })),
    )
        .into_response()
}

fn from_status(status: &tonic::Status) -> Response {
    let reason = Reason::of(status);
    let (code, description) = match reason {
        Reason::TokenMissing | Reason::TokenInvalid | Reason::BadCredentials => {
            ("INVALID_SESSION", "Invalid or expired session.")
        }
        Reason::PermissionDenied => ("FORBIDDEN", "Not allowed."),
        Reason::InvalidArgument | Reason::CursorExpired => ("BAD_REQUEST", status.message()),
        Reason::Overloaded => ("SERVER_OVERLOADED", super::OVERLOADED_TEXT),
        Reason::TooManyAttempts => (
            "TOO_MANY_REQUESTS",
            // A lockout after failures, or a login or ending rate limit.
            "Too many attempts; retry later.",
        ),
        Reason::StoreUnavailable => ("SERVICE_UNAVAILABLE", "Service unavailable; retry later."),
        // None of these calls looks anything up or creates anything.
        Reason::SessionNotFound
        | Reason::MailboxNotFound
        | Reason::UserNotFound
        | Reason::AlreadyExists
        | Reason::Internal => ("INTERNAL_ERROR", "Internal error."),
    };
    let mut response = error(reason.http_status(), code, description);
    if let Some(secs) = retry_after(status) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Login and logoutall answer bad credentials with 403 UI_10000, as documented.
fn from_credential_status(status: &tonic::Status) -> Response {
    match Reason::of(status) {
        Reason::TokenMissing | Reason::TokenInvalid | Reason::BadCredentials => {
            error(StatusCode::FORBIDDEN, BAD_CREDENTIALS.0, BAD_CREDENTIALS.1)
        }
        _ => from_status(status),
    }
}

pub(super) fn from_body_error(e: &BodyError) -> Response {
    match e {
        BodyError::TooLarge => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            &e.message(),
        ),
        BodyError::UnsupportedType(_) => error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            &e.message(),
        ),
        BodyError::Malformed(_) => error(StatusCode::BAD_REQUEST, "BAD_REQUEST", &e.message()),
    }
}

/// Why a body was refused before any gRPC call.
#[derive(Debug)]
pub enum Refusal {
    Body(BodyError),
    Bad(String),
}

impl Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Body(e) => from_body_error(&e),
            Refusal::Bad(why) => error(StatusCode::BAD_REQUEST, "BAD_REQUEST", &why),
        }
    }
}

/// `{"@type": expected, username, password}`; `@type` may be omitted.
pub fn credentials_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    expected_type: &str,
) -> Result<(String, String), Refusal> {
    let value = check_json_content_type(headers)
        .and_then(|()| parse_json(body))
        .map_err(Refusal::Body)?;
    let bad = Refusal::Bad;
    if !value.is_object() {
        return Err(bad("body must be a JSON object".into()));
    }
    match string_field(&value, "@type").map_err(bad)? {
        None => {}
        Some(t) if t == expected_type => {}
        Some(t) => return Err(bad(format!("@type must be {expected_type:?}, not {t:?}"))),
    }
    let username = string_field(&value, "username").map_err(bad)?;
    let password = string_field(&value, "password").map_err(bad)?;
    Ok((
        username.unwrap_or_default().to_owned(),
        password.unwrap_or_default().to_owned(),
    ))
}

/// Where later v2 calls go: this shim's `/saas` base. With `--public-url`
/// that base; otherwise the scheme this listener serves and the authority the
/// client used (`:authority` on HTTP/2, which hyper puts in the URI; `Host`
/// on HTTP/1.1), or the listener's own address when the client named none.
fn server_url(reachable: &Reachable, uri: &Uri, headers: &HeaderMap) -> String {
    if let Some(base) = &reachable.public_url {
        return format!("{base}/saas");
    }
    let scheme = if reachable.tls { "https" } else { "http" };
    let plausible = |h: &&str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b))
    };
    let authority = uri
        .authority()
        .map(|a| a.as_str())
        .filter(plausible)
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(plausible)
        });
    match authority {
        Some(a) => format!("{scheme}://{a}/saas"),
        // A wildcard bind address names no host a client could use.
        None if reachable.local.ip().is_unspecified() => {
            format!("{scheme}://localhost:{}/saas", reachable.local.port())
        }
        None => format!("{scheme}://{}/saas", reachable.local),
    }
}

async fn login(
    State(state): State<RestState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (username, password) = match credentials_body(&headers, body, "login") {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let request = caller.request(
        pb::LoginRequest {
            username,
            password,
            kind: pb::Kind::Api as i32,
            client: caller.client_info(),
        },
        None,
    );
    match state.upstream.clone().login(request).await {
        Ok(r) => {
            let r = r.into_inner();
            let s = r.session.unwrap_or_default();
            let created = s.created_at.map(|t| t.to_string());
            (
                StatusCode::OK,
                Json(json!({
                    "@type": "user",
                    "id": s.user,
                    "orgId": s.org,
                    "name": s.user,
                    "email": s.user,
                    "createTime": created,
                    "icSessionId": r.token,
                    "serverUrl": server_url(&state.reachable, &uri, &headers),
                    "sessionId": s.id,
                })),
            )
                .into_response()
        }
        Err(status) => from_credential_status(&status),
    }
}

async fn logout(State(state): State<RestState>, caller: Caller, headers: HeaderMap) -> Response {
    let token = match headers.get("icSessionId").map(|v| v.to_str()) {
        None => None,
        Some(Ok(t)) => Some(t.trim().to_owned()),
        Some(Err(_)) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "INVALID_SESSION",
                "Invalid or expired session.",
            )
        }
    };
    let request = caller.request(pb::LogoffRequest {}, token.as_deref());
    match state.upstream.clone().logoff(request).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(status) => from_status(&status),
    }
}

async fn logout_all(
    State(state): State<RestState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (username, password) = match credentials_body(&headers, body, "logout") {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let request = caller.request(pb::LogoutAllRequest { username, password }, None);
    match state.upstream.clone().logout_all(request).await {
        Ok(r) => {
            let ended = r.into_inner().ended;
            let body: Value = json!({
                "@type": "success",
                "description": format!("Logged out of {ended} REST API session(s) of the organization."),
            });
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(status) => from_credential_status(&status),
    }
}
