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
use serde::Serialize;
use utoipa::ToSchema;

use super::{check_json_content_type, parse_json, retry_after, string_field};
use super::{BodyError, Caller, Reachable, Redacted, RestState};
use crate::pb;
use crate::wire::Reason;

/// Informatica's code for bad credentials, with its documented text.
const BAD_CREDENTIALS: (&str, &str) = ("UI_10000", "User name or password is not valid.");

/// The OpenAPI tag of these routes.
pub const TAG: &str = "Informatica Cloud v2";

/// Where logout is served (the first is the one documented in OpenAPI; the
/// others are listed there as copies of it).
pub const LOGOUT_PATHS: [&str; 2] = ["/saas/api/v2/user/logout", "/api/v2/user/logout"];
/// Where logoutall is served (likewise).
pub const LOGOUT_ALL_PATHS: [&str; 3] = [
    "/ma/api/v2/user/logoutall",
    "/saas/api/v2/user/logoutall",
    "/api/v2/user/logoutall",
];

pub fn routes() -> Router<RestState> {
    let mut router = Router::new().route("/ma/api/v2/user/login", post(login));
    for path in LOGOUT_PATHS {
        router = router.route(path, post(logout));
    }
    for path in LOGOUT_ALL_PATHS {
        router = router.route(path, post(logout_all));
    }
    router
}

/// `@type` of a login object.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum LoginType {
    #[serde(rename = "login")]
    Login,
}

/// `@type` of a logout object.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum LogoutType {
    #[serde(rename = "logout")]
    Logout,
}

/// `@type` of a user object.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum UserType {
    #[serde(rename = "user")]
    User,
}

/// `@type` of a success object.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum SuccessType {
    #[serde(rename = "success")]
    Success,
}

/// `@type` of an error object.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum ErrorType {
    #[serde(rename = "error")]
    Error,
}

/// The error object: `statusCode` is the HTTP status.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorObject {
    #[serde(rename = "@type")]
    #[schema(inline)]
    pub kind: ErrorType,
    /// `UI_10000` for bad credentials (documented); otherwise a name such as
    /// `INVALID_SESSION`, `BAD_REQUEST` or `SERVER_OVERLOADED`.
    pub code: String,
    pub description: String,
    /// The HTTP status, repeated.
    pub status_code: u16,
}

/// The login object: `@type` may be left out. A missing, null or empty
/// username or password is refused by the service (400 "must not be
/// empty"), so both are required in the document.
#[derive(Clone, ToSchema)]
pub struct LoginRequest {
    #[schema(rename = "@type", inline)]
    pub kind: Option<LoginType>,
    /// Informatica Intelligent Cloud Services user name.
    #[schema(value_type = String, required = true, min_length = 1)]
    pub username: Option<String>,
    /// Informatica Intelligent Cloud Services password.
    #[schema(value_type = String, required = true, min_length = 1)]
    pub password: Option<String>,
}

// Never prints the secret.
impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("kind", &self.kind)
            .field("username", &self.username)
            .field("password", &Redacted)
            .finish()
    }
}

/// The logout object of logoutall: the credentials of a user of the
/// organization whose REST API sessions all end (both required, as in the
/// login object).
#[derive(Clone, ToSchema)]
pub struct LogoutRequest {
    #[schema(rename = "@type", inline)]
    pub kind: Option<LogoutType>,
    /// Informatica Intelligent Cloud Services user name.
    #[schema(value_type = String, required = true, min_length = 1)]
    pub username: Option<String>,
    /// Informatica Intelligent Cloud Services password.
    #[schema(value_type = String, required = true, min_length = 1)]
    pub password: Option<String>,
}

// Never prints the secret.
impl std::fmt::Debug for LogoutRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogoutRequest")
            .field("kind", &self.kind)
            .field("username", &self.username)
            .field("password", &Redacted)
            .finish()
    }
}

/// The user object a login answers with.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserObject {
    #[serde(rename = "@type")]
    #[schema(inline)]
    pub kind: UserType,
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub email: String,
    /// RFC 3339.
    #[schema(required = true, format = DateTime)]
    pub create_time: Option<String>,
    /// The session token, for the `icSessionId` header of later calls.
    pub ic_session_id: String,
    /// The base of later calls: this shim's `/saas`.
    pub server_url: String,
    /// The session's numeric id.
    pub session_id: i32,
}

/// The success object of logoutall.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SuccessObject {
    #[serde(rename = "@type")]
    #[schema(inline)]
    pub kind: SuccessType,
    pub description: String,
}

/// An error object; `statusCode` is the HTTP status.
pub fn error(status: StatusCode, code: &str, description: &str) -> Response {
    let body = ErrorObject {
        kind: ErrorType::Error,
        code: code.to_owned(),
        description: description.to_owned(),
        status_code: status.as_u16(),
    };
    (status, Json(body)).into_response()
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
        | Reason::NotServedHere
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
/// Returns whether `@type` was given, and the two fields (`None` when absent
/// or null).
pub fn credentials_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    expected_type: &str,
) -> Result<(bool, Option<String>, Option<String>), Refusal> {
    let value = check_json_content_type(headers)
        .and_then(|()| parse_json(body))
        .map_err(Refusal::Body)?;
    let bad = Refusal::Bad;
    if !value.is_object() {
        return Err(bad("body must be a JSON object".into()));
    }
    let typed = match string_field(&value, "@type").map_err(bad)? {
        None => false,
        Some(t) if t == expected_type => true,
        Some(t) => return Err(bad(format!("@type must be {expected_type:?}, not {t:?}"))),
    };
    let username = string_field(&value, "username").map_err(bad)?;
    let password = string_field(&value, "password").map_err(bad)?;
    Ok((
        typed,
        username.map(str::to_owned),
        password.map(str::to_owned),
    ))
}

impl LoginRequest {
    /// The login object of a request, or its vendor-shaped refusal.
    pub fn parse(
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Self, Refusal> {
        let (typed, username, password) = credentials_body(headers, body, "login")?;
        Ok(LoginRequest {
            kind: typed.then_some(LoginType::Login),
            username,
            password,
        })
    }
}

impl LogoutRequest {
    /// The logout object of a request, or its vendor-shaped refusal.
    pub fn parse(
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Self, Refusal> {
        let (typed, username, password) = credentials_body(headers, body, "logout")?;
        Ok(LogoutRequest {
            kind: typed.then_some(LogoutType::Logout),
            username,
            password,
        })
    }
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

#[utoipa::path(
    post,
    path = "/ma/api/v2/user/login",
    operation_id = "informatica_login",
    tag = TAG,
    summary = "Login",
    description = "Logs in to the organization and opens a version 2 REST API session.",
    request_body(
        content = LoginRequest,
        content_type = "application/json",
        example = json!({"@type": "login", "username": "useremail@company.com", "password": "mypassword"}),
    ),
    responses(
        (status = 200, description = "The user object", body = UserObject, content_type = "application/json"),
        (status = 400, description = "`BAD_REQUEST`: not a JSON object, a field of the wrong type, another `@type`, or a field over its limit", body = ErrorObject, content_type = "application/json"),
        (status = 403, description = "`UI_10000`: user name or password is not valid; `FORBIDDEN`: not allowed", body = ErrorObject, content_type = "application/json"),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: a content type that is not JSON", body = ErrorObject, content_type = "application/json"),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: the body is larger than 64 KiB", body = ErrorObject, content_type = "application/json"),
        (status = 429, description = "`TOO_MANY_REQUESTS` after too many failed attempts, or `SERVER_OVERLOADED` when shed under overload", body = ErrorObject, content_type = "application/json", headers(("Retry-After" = u64, description = "Seconds to wait before retrying, when known"))),
        (status = 500, description = "`INTERNAL_ERROR`: unexpected failure", body = ErrorObject, content_type = "application/json"),
        (status = 503, description = "`SERVICE_UNAVAILABLE`: the session store or the gRPC upstream is unavailable", body = ErrorObject, content_type = "application/json", headers(("Retry-After" = u64, description = "Seconds to wait before retrying, when known"))),
    )
)]
async fn login(
    State(state): State<RestState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let login = match LoginRequest::parse(&headers, body) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let request = caller.request(
        pb::LoginRequest {
            username: login.username.unwrap_or_default(),
            password: login.password.unwrap_or_default(),
            kind: pb::Kind::Api as i32,
            client: caller.client_info(),
        },
        None,
    );
    match state.upstream.clone().login(request).await {
        Ok(r) => {
            let r = r.into_inner();
            let s = r.session.unwrap_or_default();
            let user = UserObject {
                kind: UserType::User,
                id: s.user.clone(),
                org_id: s.org,
                name: s.user.clone(),
                email: s.user,
                create_time: s.created_at.map(|t| t.to_string()),
                ic_session_id: r.token,
                server_url: server_url(&state.reachable, &uri, &headers),
                session_id: s.id,
            };
            (StatusCode::OK, Json(user)).into_response()
        }
        Err(status) => from_credential_status(&status),
    }
}

#[utoipa::path(
    post,
    path = "/saas/api/v2/user/logout",
    operation_id = "informatica_logout",
    tag = TAG,
    summary = "Logout",
    description = "Logs out of the organization and ends the version 2 REST API session named by the `icSessionId` header. The body, if any, is not read.",
    params(("icSessionId" = String, Header, description = "The `icSessionId` of a login")),
    responses(
        (status = 200, description = "Logged out (empty body)"),
        (status = 401, description = "`INVALID_SESSION`: no `icSessionId`, or not a live session", body = ErrorObject, content_type = "application/json"),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: the body is larger than 64 KiB", body = ErrorObject, content_type = "application/json"),
        (status = 429, description = "`TOO_MANY_REQUESTS` after too many failed attempts, or `SERVER_OVERLOADED` when shed under overload", body = ErrorObject, content_type = "application/json", headers(("Retry-After" = u64, description = "Seconds to wait before retrying, when known"))),
        (status = 500, description = "`INTERNAL_ERROR`: unexpected failure", body = ErrorObject, content_type = "application/json"),
        (status = 503, description = "`SERVICE_UNAVAILABLE`: the session store or the gRPC upstream is unavailable", body = ErrorObject, content_type = "application/json", headers(("Retry-After" = u64, description = "Seconds to wait before retrying, when known"))),
    )
)]
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

#[utoipa::path(
    post,
    path = "/ma/api/v2/user/logoutall",
    operation_id = "informatica_logoutall",
    tag = TAG,
    summary = "Logout all",
    description = "Logs out of the organization and ends all version 2 REST API sessions of the organization.",
    request_body(
        content = LogoutRequest,
        content_type = "application/json",
        description = "The example is the Informatica Cloud REST API reference's own.",
        example = json!({"@type": "logout", "username": "useremail@company.com", "password": "mypassword"}),
    ),
    responses(
        (status = 200, description = "The success object", body = SuccessObject, content_type = "application/json"),
        (status = 400, description = "`BAD_REQUEST`: not a JSON object, a field of the wrong type, another `@type`, or a field over its limit", body = ErrorObject, content_type = "application/json"),
        (status = 403, description = "`UI_10000`: user name or password is not valid; `FORBIDDEN`: not allowed", body = ErrorObject, content_type = "application/json"),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: a content type that is not JSON", body = ErrorObject, content_type = "application/json"),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: the body is larger than 64 KiB", body = ErrorObject, content_type = "application/json"),
        (status = 429, description = "`TOO_MANY_REQUESTS` after too many failed attempts, or `SERVER_OVERLOADED` when shed under overload", body = ErrorObject, content_type = "application/json", headers(("Retry-After" = u64, description = "Seconds to wait before retrying, when known"))),
        (status = 500, description = "`INTERNAL_ERROR`: unexpected failure", body = ErrorObject, content_type = "application/json"),
        (status = 503, description = "`SERVICE_UNAVAILABLE`: the session store or the gRPC upstream is unavailable", body = ErrorObject, content_type = "application/json", headers(("Retry-After" = u64, description = "Seconds to wait before retrying, when known"))),
    )
)]
async fn logout_all(
    State(state): State<RestState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let logout = match LogoutRequest::parse(&headers, body) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let request = caller.request(
        pb::LogoutAllRequest {
            username: logout.username.unwrap_or_default(),
            password: logout.password.unwrap_or_default(),
        },
        None,
    );
    match state.upstream.clone().logout_all(request).await {
        Ok(r) => {
            let ended = r.into_inner().ended;
            let body = SuccessObject {
                kind: SuccessType::Success,
                description: format!(
                    "Logged out of {ended} REST API session(s) of the organization."
                ),
            };
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(status) => from_credential_status(&status),
    }
}
