//! Parallels RAS REST API v1.0, Administrator Sessions: logon, Log off, LogOff
//! Other Admin and the admin session list. Responses are
//! `application/json; api-version=1.0`; every error is an RFC 7807
//! ProblemDetails `{type, title, status, detail, instance}`.

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

use super::{check_json_content_type, parse_json, retry_after, string_field};
use super::{BodyError, Caller, Instance, Redacted, RestState};
use crate::pb;
use crate::wire::Reason;

/// The content type of every answer, errors included.
pub const CONTENT_TYPE: &str = "application/json; api-version=1.0";
/// Admin sessions listed at most (the RAS list has no paging).
const MAX_LISTED: usize = 10_000;

/// The OpenAPI tag of these routes.
pub const TAG: &str = "Parallels RAS";

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

/// An RFC 7807 ProblemDetails: the body of every RAS error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemDetails {
    /// A URI naming the kind of problem (the RFC section of the status).
    #[serde(rename = "type")]
    pub type_uri: String,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status, repeated.
    pub status: u16,
    /// What went wrong, in words.
    pub detail: String,
    /// The request path, as sent.
    pub instance: String,
}

/// The logon body: `{username, password}`. The body is parsed into this
/// (a field left out or null is `None`); an empty, missing or null field is
/// then refused by the service (400 "must not be empty"), so both are
/// required in the document. A field of another JSON type is 400.
#[derive(Clone, Default, PartialEq, Eq, ToSchema)]
pub struct LogonRequest {
    /// The administrator's username.
    #[schema(value_type = String, required = true, min_length = 1)]
    pub username: Option<String>,
    /// The administrator's password.
    #[schema(value_type = String, required = true, min_length = 1)]
    pub password: Option<String>,
}

// Never prints the secret.
impl std::fmt::Debug for LogonRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogonRequest")
            .field("username", &self.username)
            .field("password", &Redacted)
            .finish()
    }
}

/// A successful logon: the token to send as `auth_token` on later calls.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogonResponse {
    /// The session token, for the `auth_token` header.
    pub auth_token: String,
    /// The session's numeric id (what LogOff Other Admin takes).
    pub session_id: i32,
    pub user_id: String,
    pub username: String,
    pub org: String,
    /// RFC 3339.
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    /// RFC 3339: the end of the session's lifetime.
    #[schema(required = true, format = DateTime)]
    pub expires_at: Option<String>,
}

/// One live administrator session of the caller's organization.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminSession {
    pub session_id: i32,
    pub user: String,
    pub org: String,
    /// RFC 3339.
    #[schema(required = true, format = DateTime)]
    pub logon_time: Option<String>,
    /// RFC 3339 (recorded at most once per refresh interval).
    #[schema(required = true, format = DateTime)]
    pub last_activity_time: Option<String>,
    /// RFC 3339.
    #[schema(required = true, format = DateTime)]
    pub expires_at: Option<String>,
    /// Empty when unknown.
    pub client_address: String,
    /// Empty when unknown.
    pub user_agent: String,
}

/// A ProblemDetails answer.
pub fn problem(status: StatusCode, detail: &str, instance: &str) -> Response {
    let body = ProblemDetails {
        type_uri: type_uri(status).to_owned(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
        instance: instance.to_owned(),
    };
    ok(status, body)
}

fn ok(status: StatusCode, body: impl Serialize) -> Response {
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
) -> Result<LogonRequest, Refusal> {
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
    Ok(LogonRequest {
        username: field("username")?.map(str::to_owned),
        password: field("password")?.map(str::to_owned),
    })
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

fn timestamp(t: Option<&prost_types::Timestamp>) -> Option<String> {
    t.map(|t| t.to_string())
}

#[utoipa::path(
    post,
    path = "/api/Session/logon",
    operation_id = "ras_logon",
    tag = TAG,
    summary = "Logon",
    description = "Opens an administrator (console) session. Every failed logon is 401, a valid non-administrator's included.",
    request_body(
        content = LogonRequest,
        content_type = "application/json",
        example = json!({"username": "domain_admin@example.com", "password": "pencil75"}),
    ),
    responses(
        (status = 200, description = "Logged on", body = LogonResponse, content_type = "application/json; api-version=1.0"),
        (status = 400, description = "Not a JSON object, a field of the wrong type, an unsupported api-version or a field over its limit", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 401, description = "Bad credentials, an unknown user, or not an administrator", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 415, description = "A content type that is not JSON", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 413, description = "The body is larger than 64 KiB", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 429, description = "Throttled after too many failed attempts, or shed under overload (the detail says which)", body = ProblemDetails, content_type = "application/json; api-version=1.0", headers(("Retry-After" = u64, description = "Seconds to wait before retrying, when known"))),
        (status = 500, description = "Unexpected failure", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 503, description = "The session store or the gRPC upstream is unavailable", body = ProblemDetails, content_type = "application/json; api-version=1.0", headers(("Retry-After" = u64, description = "Seconds to wait before retrying, when known"))),
    )
)]
async fn logon(
    State(state): State<RestState>,
    caller: Caller,
    Instance(instance): Instance,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let instance = instance.as_str();
    let logon = match parse_logon(&headers, body) {
        Ok(c) => c,
        Err(r) => return r.into_problem(instance),
    };
    let request = caller.request(
        pb::LoginRequest {
            username: logon.username.unwrap_or_default(),
            password: logon.password.unwrap_or_default(),
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
                LogonResponse {
                    auth_token: r.token,
                    session_id: s.id,
                    user_id: s.user.clone(),
                    username: s.user,
                    org: s.org,
                    created_at: timestamp(s.created_at.as_ref()),
                    expires_at: timestamp(s.expires_at.as_ref()),
                },
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

#[utoipa::path(
    post,
    path = "/api/Session/logoff",
    operation_id = "ras_logoff",
    tag = TAG,
    summary = "Log off",
    description = "Log off user. User must be authenticated first.",
    params(("auth_token" = String, Header, description = "The token of a logon")),
    responses(
        (status = 200, description = "Logged off: a JSON string naming the session", body = String, content_type = "application/json; api-version=1.0"),
        (status = 400, description = "A content type naming an api-version other than 1.0 (only once the token is known to be live)", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 401, description = "No `auth_token`, or not a live session", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 413, description = "The body is larger than 64 KiB", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 429, description = "Throttled after too many failed attempts, or shed under overload (the detail says which)", body = ProblemDetails, content_type = "application/json; api-version=1.0", headers(("Retry-After" = u64, description = "Seconds to wait before retrying, when known"))),
        (status = 500, description = "Unexpected failure", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 503, description = "The session store or the gRPC upstream is unavailable", body = ProblemDetails, content_type = "application/json; api-version=1.0", headers(("Retry-After" = u64, description = "Seconds to wait before retrying, when known"))),
    )
)]
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
            format!("Session {} logged off.", r.into_inner().session_id),
        ),
        Err(status) => from_status(&status, instance),
    }
}

#[utoipa::path(
    post,
    path = "/api/Session/{SessionId}/logoff",
    operation_id = "ras_logoff_other_admin",
    tag = TAG,
    summary = "LogOff Other Admin",
    description = "Invoke the RAS Admin Session to send the LogOff command for the Admin with specified Session ID.",
    params(
        ("SessionId" = i32, Path, description = "Session ID of the Admin to be Disconnected."),
        ("auth_token" = String, Header, description = "The token of a logon"),
    ),
    responses(
        (status = 204, description = "No Content: the session has ended"),
        (status = 400, description = "SessionId is not a positive 32-bit integer, or an unsupported api-version (only once the token is known to be live)", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 401, description = "No `auth_token`, or not a live session", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 403, description = "The caller may not end that session", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 404, description = "No live administrator session with that id in the caller's organization", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 413, description = "The body is larger than 64 KiB", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 429, description = "Throttled after too many failed attempts, or shed under overload (the detail says which)", body = ProblemDetails, content_type = "application/json; api-version=1.0", headers(("Retry-After" = u64, description = "Seconds to wait before retrying, when known"))),
        (status = 500, description = "Unexpected failure", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 503, description = "The session store or the gRPC upstream is unavailable", body = ProblemDetails, content_type = "application/json; api-version=1.0", headers(("Retry-After" = u64, description = "Seconds to wait before retrying, when known"))),
    )
)]
async fn logoff_other(
    State(state): State<RestState>,
    caller: Caller,
    Instance(instance): Instance,
    headers: HeaderMap,
    session_id: Result<Path<String>, PathRejection>,
) -> Response {
    let instance = instance.as_str();
    // A segment that is not UTF-8 once decoded is a bad SessionId like any
    // other, answered as one (after authentication), not by axum's rejection.
    let parsed = session_id
        .ok()
        .and_then(|Path(id)| id.parse::<i32>().ok())
        .filter(|id| *id > 0);
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
    let request = caller.request(
        pb::LogoffOtherRequest {
            session_id,
            ..Default::default()
        },
        Some(&token),
    );
    match state.upstream.clone().logoff_other(request).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(status) => from_status(&status, instance),
    }
}

#[utoipa::path(
    get,
    path = "/api/Session",
    operation_id = "ras_list_admin_sessions",
    tag = TAG,
    summary = "Administrator sessions",
    description = "The live administrator sessions of the caller's organization (never their tokens).",
    params(("auth_token" = String, Header, description = "The token of a logon")),
    responses(
        (status = 200, description = "The sessions", body = Vec<AdminSession>, content_type = "application/json; api-version=1.0"),
        (status = 400, description = "A content type naming an api-version other than 1.0 (only once the token is known to be live)", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 401, description = "No `auth_token`, or not a live session", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 403, description = "The caller may not list sessions", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 413, description = "The body is larger than 64 KiB", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 429, description = "Throttled after too many failed attempts, or shed under overload (the detail says which)", body = ProblemDetails, content_type = "application/json; api-version=1.0", headers(("Retry-After" = u64, description = "Seconds to wait before retrying, when known"))),
        (status = 500, description = "Unexpected failure", body = ProblemDetails, content_type = "application/json; api-version=1.0"),
        (status = 503, description = "The session store or the gRPC upstream is unavailable", body = ProblemDetails, content_type = "application/json; api-version=1.0", headers(("Retry-After" = u64, description = "Seconds to wait before retrying, when known"))),
    )
)]
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
                    AdminSession {
                        session_id: s.id,
                        user: s.user,
                        org: s.org,
                        logon_time: timestamp(s.created_at.as_ref()),
                        last_activity_time: timestamp(s.last_seen_at.as_ref()),
                        expires_at: timestamp(s.expires_at.as_ref()),
                        // The address the server saw, never the one a client
                        // reported about itself.
                        client_address: s.peer_address,
                        user_agent: client.user_agent,
                    }
                }));
                if r.next_page_token.is_empty() || sessions.len() >= MAX_LISTED {
                    break;
                }
                page_token = r.next_page_token;
            }
            Err(status) => return from_status(&status, instance),
        }
    }
    ok(StatusCode::OK, sessions)
}
