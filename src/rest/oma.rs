//! OpenSRS Email API (OMA): `POST /api/<method>` with a `credentials` object.
//! Well-formed JSON always gets HTTP 200 with `{"success": true, ...}` or
//! `{"success": false, "error": text, "error_number": N}` (OMA's own numbers);
//! malformed JSON gets 400, an unknown method 404, an oversized body 413.

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{parse_json, string_field, BodyError, Caller, Redacted, RestState};
use crate::pb;
use crate::wire::Reason;

// OMA's error numbers and texts (its own table).
const SERVER_ERROR: (u8, &str) = (0, "Server error");
const INVALID_CREDENTIALS: (u8, &str) = (1, "Invalid credentials supplied in request");
const NO_SUCH_OBJECT: (u8, &str) = (2, "The requested object does not exist");
const NO_PERMISSION: (u8, &str) = (4, "Requestor lacks permission");
const BADLY_FORMATTED: (u8, &str) = (5, "Request badly formatted");
const BAD_ATTRIBUTE: (u8, &str) = (6, "One or more attributes badly formatted");

/// The OpenAPI tag of these routes.
pub const TAG: &str = "OpenSRS Email API";

pub fn routes() -> Router<RestState> {
    Router::new().route("/api/{method}", post(dispatch))
}

/// Every answer: `{"success": true}`, or `{"success": false, error,
/// error_number}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OmaResponse {
    /// Whether the request was successful.
    pub success: bool,
    /// Returned if `success` is false: a text that explains the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
    /// Returned if `success` is false: 0 server error, 1 invalid
    /// credentials, 2 no such object, 4 no permission, 5 request badly
    /// formatted, 6 attribute badly formatted.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error_number: Option<u8>,
}

impl OmaResponse {
    fn error(number: u8, error: String) -> Self {
        OmaResponse {
            success: false,
            error: Some(error),
            error_number: Some(number),
        }
    }
}

/// The credentials object: who is asking, with a password or a token.
#[derive(Clone, ToSchema)]
pub struct OmaCredentials {
    /// The requesting user's email address.
    pub user: String,
    /// The requesting user's password (give this or `token`, not both).
    #[schema(nullable = false)]
    pub password: Option<String>,
    /// A session token of the requesting user (give this or `password`).
    #[schema(nullable = false)]
    pub token: Option<String>,
    /// The client's name, recorded in the audit trail.
    #[schema(nullable = false)]
    pub client: Option<String>,
}

// Never prints the secret.
impl std::fmt::Debug for OmaCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OmaCredentials")
            .field("user", &self.user)
            .field("password", &Redacted)
            .field("token", &Redacted)
            .field("client", &self.client)
            .finish()
    }
}

/// The logout_user request: credentials and the mailbox whose IMAP and POP
/// sessions end.
#[derive(Debug, Clone, ToSchema)]
pub struct LogoutUserRequest {
    pub credentials: OmaCredentials,
    /// The user's email address.
    pub user: String,
}

/// An error answer with an explicit HTTP status (only for requests that are
/// not well-formed JSON: 400, 404, 405, 413).
pub fn http_error(status: StatusCode, number: u8, text: &str) -> Response {
    (status, Json(OmaResponse::error(number, text.to_owned()))).into_response()
}

fn failure((number, text): (u8, &str), detail: Option<&str>) -> Response {
    let error = match detail {
        Some(d) if !d.is_empty() => format!("{text}: {d}"),
        _ => text.to_owned(),
    };
    (StatusCode::OK, Json(OmaResponse::error(number, error))).into_response()
}

pub fn unknown_method() -> Response {
    http_error(StatusCode::NOT_FOUND, BADLY_FORMATTED.0, "Unknown method")
}

pub(super) fn from_body_error(e: &BodyError) -> Response {
    let status = match e {
        BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::UnsupportedType(_) | BodyError::Malformed(_) => StatusCode::BAD_REQUEST,
    };
    http_error(status, BADLY_FORMATTED.0, &e.message())
}

fn from_status(status: &tonic::Status) -> Response {
    match Reason::of(status) {
        // Throttling is about the credentials; OMA has no number of its own.
        Reason::TokenMissing
        | Reason::TokenInvalid
        | Reason::BadCredentials
        | Reason::TooManyAttempts => failure(INVALID_CREDENTIALS, None),
        Reason::SessionNotFound | Reason::MailboxNotFound | Reason::UserNotFound => {
            failure(NO_SUCH_OBJECT, None)
        }
        Reason::PermissionDenied => failure(NO_PERMISSION, None),
        Reason::InvalidArgument | Reason::CursorExpired => {
            failure(BAD_ATTRIBUTE, Some(status.message()))
        }
        // OMA has no overload number: a server error that says so, not error 1.
        Reason::Overloaded => failure(SERVER_ERROR, Some(super::OVERLOADED_TEXT)),
        Reason::AlreadyExists
        | Reason::StoreUnavailable
        | Reason::NotServedHere
        | Reason::Internal => failure(SERVER_ERROR, None),
    }
}

async fn dispatch(
    State(state): State<RestState>,
    caller: Caller,
    method: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // The content type is not checked: OMA clients post JSON with whatever
    // header their HTTP library sets; the body decides.
    let value = match parse_json(body) {
        Ok(v) => v,
        Err(e) => return from_body_error(&e),
    };
    // A method name that is not UTF-8 once decoded names no method.
    match method.as_ref().map(|Path(m)| m.as_str()) {
        Ok("logout_user") => logout_user(state, caller, value).await,
        _ => unknown_method(),
    }
}

/// The request's structure, checked before anything reaches gRPC.
pub fn logout_user_request(value: &Value) -> Result<pb::LogoutUserRequest, &'static str> {
    LogoutUserRequest::parse(value).map(LogoutUserRequest::into_pb)
}

impl LogoutUserRequest {
    /// The request's fields, checked in order: each refusal names the
    /// first thing wrong (error number 5).
    pub fn parse(value: &Value) -> Result<Self, &'static str> {
        let creds = match value.get("credentials") {
            Some(c @ Value::Object(_)) => c,
            Some(_) => return Err("credentials must be an object"),
            None => return Err("credentials missing"),
        };
        let user = string_field(creds, "user")
            .map_err(|_| "credentials.user must be a string")?
            .ok_or("credentials.user missing")?;
        let password =
            string_field(creds, "password").map_err(|_| "credentials.password must be a string")?;
        let token =
            string_field(creds, "token").map_err(|_| "credentials.token must be a string")?;
        match (password, token) {
            (Some(_), None) | (None, Some(_)) => {}
            (Some(_), Some(_)) => {
                return Err("give either credentials.password or credentials.token, not both")
            }
            (None, None) => return Err("credentials.password or credentials.token missing"),
        }
        let client =
            string_field(creds, "client").map_err(|_| "credentials.client must be a string")?;
        let mailbox = string_field(value, "user")
            .map_err(|_| "user must be a string")?
            .ok_or("user missing")?;
        Ok(LogoutUserRequest {
            credentials: OmaCredentials {
                user: user.to_owned(),
                password: password.map(str::to_owned),
                token: token.map(str::to_owned),
                client: client.map(str::to_owned),
            },
            user: mailbox.to_owned(),
        })
    }

    /// The gRPC request ([`Self::parse`] has made sure exactly one of
    /// password and token is given).
    pub fn into_pb(self) -> pb::LogoutUserRequest {
        let OmaCredentials {
            user,
            password,
            token,
            client,
        } = self.credentials;
        let secret = match (password, token) {
            (Some(p), _) => Some(pb::credentials::Secret::Password(p)),
            (None, Some(t)) => Some(pb::credentials::Secret::Token(t)),
            (None, None) => None,
        };
        pb::LogoutUserRequest {
            credentials: Some(pb::Credentials {
                user,
                secret,
                client: client.unwrap_or_default(),
            }),
            user: self.user,
        }
    }
}

/// `POST /api/logout_user`; served through [`dispatch`], which reads the body
/// first (malformed JSON is 400 whatever the method).
#[utoipa::path(
    post,
    path = "/api/logout_user",
    operation_id = "oma_logout_user",
    tag = TAG,
    summary = "logout_user",
    description = "Terminates all IMAP and POP sessions that the specified user has active. Well-formed JSON always gets HTTP 200, with `success` false and OMA's error number on failure (5 for a request badly formatted: missing fields, wrong JSON types, both or neither of password and token).",
    request_body(
        content = LogoutUserRequest,
        content_type = "application/json",
        description = "The example is the OpenSRS Email API reference's own.",
        example = json!({"credentials": {"user": "domain_admin@example.com", "password": "pencil75"}, "user": "joe_user@example.com"}),
    ),
    responses(
        (status = 200, description = "Done, or refused with an OMA error number", body = OmaResponse, content_type = "application/json"),
        (status = 400, description = "Not valid JSON (error number 5)", body = OmaResponse, content_type = "application/json"),
        (status = 413, description = "The body is larger than 64 KiB (error number 5)", body = OmaResponse, content_type = "application/json"),
    )
)]
async fn logout_user(state: RestState, caller: Caller, value: Value) -> Response {
    if !value.is_object() {
        return failure(BADLY_FORMATTED, Some("body must be a JSON object"));
    }
    let request = match LogoutUserRequest::parse(&value) {
        Ok(r) => r.into_pb(),
        Err(why) => return failure(BADLY_FORMATTED, Some(why)),
    };
    match state
        .upstream
        .clone()
        .logout_user(caller.request(request, None))
        .await
    {
        Ok(_) => {
            let ok = OmaResponse {
                success: true,
                error: None,
                error_number: None,
            };
            (StatusCode::OK, Json(ok)).into_response()
        }
        Err(status) => from_status(&status),
    }
}
