//! Parallels RAS REST API v1.0, Administrator Sessions: logon, Log off, LogOff
//! Other Admin and the admin session list. Responses are
//! `application/json; api-version=1.0`; every error is an RFC 7807
//! ProblemDetails `{type, title, status, detail, instance}`.

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};

use super::{check_json_content_type, parse_json, retry_after, string_field};
use super::{BodyError, Caller, Instance, RestState};
use crate::pb;
use crate::wire::Reason;

const CONTENT_TYPE: &str = "application/json; api-version=1.0";
/// Admin sessions listed at most (the RAS list has no paging).
const MAX_LISTED: usize = 10_000;

pub fn routes() -> Router<RestState> {
    // Paths are matched lower-case; `rest::normalize_ras_path` folds them first.
    Router::new()
        .route("/api/session/logon", post(logon))
        .route("/api/session/logoff", post(logoff))
        .route("/api/session/{session_id}/logoff", post(logoff_other))
        .route("/api/session", get(list))
}

fn type_uri(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        401 => "https://tools.ietf.org/html/rfc9110#section-15.5.2",
        403 => "https://tools.ietf.org/html/rfc9110#section-15.5.4",
        404 => "https://tools.ietf.org/html/rfc9110#section-15.5.5",
        405 => "https://tools.ietf.org/html/rfc9110#section-15.5.6",
        413 => "https://tools.ietf.org/html/rfc9110#section-15.5.14",
        415 => "https://tools.ietf.org/html/rfc9110#section-15.5.16",
        429 => "https://tools.ietf.org/html/rfc6585#section-4",
        503 => "https://tools.ietf.org/html/rfc9110#section-15.6.4",
        _ => "https://tools.ietf.org/html/rfc9110#section-15.6.1",
    }
}

fn with_content_type(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// A ProblemDetails answer.
pub fn problem(status: StatusCode, detail: &str, instance: &str) -> Response {
    let body = json!({
        "type": type_uri(status),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "instance": instance,
    });
    with_content_type((status, Json(body)).into_response())
}

fn ok(status: StatusCode, body: Value) -> Response {
    with_content_type((status, Json(body)).into_response())
}

/// Every failure has the default HTTP status of its reason and the
/// service's own message as its detail, but for a shed call.
fn from_status(status: &tonic::Status, instance: &str) -> Response {
    let reason = Reason::of(status);
    let detail = match reason {
        Reason::Overloaded => super::OVERLOADED_TEXT,
        _ => status.message(),
    };
    let mut response = problem(reason.http_status(), detail, instance);
    if let Some(secs) = retry_after(status) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

pub(super) fn from_body_error(e: &BodyError, instance: &str) -> Response {
    let status = match e {
        BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::UnsupportedType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        BodyError::Malformed(_) => StatusCode::BAD_REQUEST,
    };
    problem(status, &e.message(), instance)
}

/// A refusal made before any gRPC call; becomes a ProblemDetails.
#[derive(Debug)]
pub struct Refusal(pub StatusCode, pub String);

/// The logon body `{username, password}`: api-version, content type, JSON,
/// shape and field types are all checked here, before anything reaches gRPC.
pub fn parse_logon(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, String), Refusal> {
    check_api_version(headers)?;
    let value = check_json_content_type(headers)
        .and_then(|()| parse_json(body))
        .map_err(|e| {
            let status = match e {
                BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::UnsupportedType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                BodyError::Malformed(_) => StatusCode::BAD_REQUEST,
            };
            Refusal(status, e.message())
        })?;
    if !value.is_object() {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "body must be a JSON object".into(),
        ));
    }
    let field = |name| string_field(&value, name).map_err(|e| Refusal(StatusCode::BAD_REQUEST, e));
    let username = field("username")?.unwrap_or("").to_owned();
    let password = field("password")?.unwrap_or("").to_owned();
    Ok((username, password))
}

impl Refusal {
    fn into_problem(self, instance: &str) -> Response {
        problem(self.0, &self.1, instance)
    }
}

/// Only API version 1.0 is spoken; a content type naming another is refused,
/// a missing one means 1.0.
fn check_api_version(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = ct.to_str().unwrap_or("");
    for param in text.split(';').skip(1) {
        if let Some((k, v)) = param.split_once('=') {
            if k.trim().eq_ignore_ascii_case("api-version") {
                let v = v.trim().trim_matches('"');
                if v != "1.0" && v != "1" {
                    return Err(Refusal(
                        StatusCode::BAD_REQUEST,
                        format!("unsupported api-version {v:?}; this server speaks 1.0"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The `auth_token` header: 401 when absent, empty or not text. Nothing else
/// about the request is judged before the caller is known.
fn token_of(headers: &HeaderMap) -> Result<String, Refusal> {
    match headers.get("auth_token").map(|v| v.to_str().map(str::trim)) {
        None | Some(Ok("")) => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "missing session token".into(),
        )),
        Some(Ok(t)) => Ok(t.to_owned()),
        Some(Err(_)) => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "invalid or expired session token".into(),
        )),
    }
}

/// Authentication first, then every other check: a request with a token
/// that fails `checks` is refused with that check's answer only once the
/// token is known to be live (one ValidateSession, on this error path
/// only); otherwise 401. Returns the token when everything passes.
async fn authenticated(
    state: &RestState,
    caller: &Caller,
    headers: &HeaderMap,
    instance: &str,
    checks: impl FnOnce() -> Result<(), Refusal>,
) -> Result<String, Response> {
    let token = token_of(headers).map_err(|r| r.into_problem(instance))?;
    let Err(refusal) = checks() else {
        return Ok(token);
    };
    let request = caller.request(
        pb::ValidateSessionRequest {
            token: token.clone(),
        },
        None,
    );
    match state.upstream.clone().validate_session(request).await {
        Ok(_) => Err(refusal.into_problem(instance)),
        Err(status) => Err(from_status(&status, instance)),
    }
}

fn timestamp(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}

async fn logon(
    State(state): State<RestState>,
    caller: Caller,
    Instance(instance): Instance,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let instance = instance.as_str();
    let (username, password) = match parse_logon(&headers, body) {
        Ok(c) => c,
        Err(r) => return r.into_problem(instance),
    };
    let request = caller.request(
        pb::LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            kind: pb::Kind::Admin as i32,
            client: caller.client_info(),
        },
        None,
    );
    match state.upstream.clone().login(request).await {
        Ok(r) => {
            let r = r.into_inner();
            let s = r.session.unwrap_or_default();
            ok(
                StatusCode::OK,
                json!({
                    "authToken": r.token,
                    "sessionId": s.id,
                    "userId": s.user,
                    "username": s.user,
                    "org": s.org,
                    "createdAt": timestamp(s.created_at.as_ref()),
                    "expiresAt": timestamp(s.expires_at.as_ref()),
                }),
            )
        }
        // RAS documents 401 for every failed logon, a non-admin's included.
        Err(status) if Reason::of(&status) == Reason::PermissionDenied => problem(
            StatusCode::UNAUTHORIZED,
            "only administrators may log on to the console",
            instance,
        ),
        Err(status) => from_status(&status, instance),
    }
}

async fn logoff(
    State(state): State<RestState>,
    caller: Caller,
    Instance(instance): Instance,
    headers: HeaderMap,
) -> Response {
    let instance = instance.as_str();
    let token = match authenticated(&state, &caller, &headers, instance, || {
        check_api_version(&headers)
    })
    .await
    {
        Ok(t) => t,
        Err(r) => return r,
    };
    let request = caller.request(pb::LogoffRequest {}, Some(&token));
    match state.upstream.clone().logoff(request).await {
        Ok(r) => ok(
            StatusCode::OK,
            Value::String(format!("Session {} logged off.", r.into_inner().session_id)),
        ),
        Err(status) => from_status(&status, instance),
    }
}

async fn logoff_other(
    State(state): State<RestState>,
    caller: Caller,
    Instance(instance): Instance,
    headers: HeaderMap,
    Path(session_id): Path<String>,
) -> Response {
    let instance = instance.as_str();
    let parsed = session_id.parse::<i32>().ok().filter(|id| *id > 0);
    let token = match authenticated(&state, &caller, &headers, instance, || {
        check_api_version(&headers)?;
        match parsed {
            Some(_) => Ok(()),
            None => Err(Refusal(
                StatusCode::BAD_REQUEST,
                "SessionId must be a positive 32-bit integer".into(),
            )),
        }
    })
    .await
    {
        Ok(t) => t,
        Err(r) => return r,
    };
    let session_id = parsed.unwrap_or_default();
    let request = caller.request(pb::LogoffOtherRequest { session_id }, Some(&token));
    match state.upstream.clone().logoff_other(request).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(status) => from_status(&status, instance),
    }
}

async fn list(
    State(state): State<RestState>,
    caller: Caller,
    Instance(instance): Instance,
    headers: HeaderMap,
) -> Response {
    let instance = instance.as_str();
    let token = match authenticated(&state, &caller, &headers, instance, || {
        check_api_version(&headers)
    })
    .await
    {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut upstream = state.upstream.clone();
    let mut sessions = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = caller.request(
            pb::ListSessionsRequest {
                user: String::new(),
                kind: pb::Kind::Admin as i32,
                page_size: 1000,
                page_token: std::mem::take(&mut page_token),
            },
            Some(&token),
        );
        match upstream.list_sessions(request).await {
            Ok(r) => {
                let r = r.into_inner();
                sessions.extend(r.sessions.into_iter().map(|s| {
                    let client = s.client.unwrap_or_default();
                    json!({
                        "sessionId": s.id,
                        "user": s.user,
                        "org": s.org,
                        "logonTime": timestamp(s.created_at.as_ref()),
                        "lastActivityTime": timestamp(s.last_seen_at.as_ref()),
                        "expiresAt": timestamp(s.expires_at.as_ref()),
                        // The address the server saw, never the one a
                        // client reported about itself.
                        "clientAddress": s.peer_address,
                        "userAgent": client.user_agent,
                    })
                }));
                if r.next_page_token.is_empty() || sessions.len() >= MAX_LISTED {
                    break;
                }
                page_token = r.next_page_token;
            }
            Err(status) => return from_status(&status, instance),
        }
    }
    ok(StatusCode::OK, Value::Array(sessions))
}
