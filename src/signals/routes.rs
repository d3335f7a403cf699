//! The transmitter's HTTP routes on the REST listener: discovery, the
//! JWKS, stream management and the poll endpoints. Errors are JSON
//! `{"err", "description"}` with the status SSF names for each case.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::stream::{self, POLL, PUSH};
use super::{SsfError, Transmitter};
use crate::rest::Caller;
use crate::sessions::Principal;

/// Largest request body of these routes.
const MAX_BODY: usize = 64 * 1024;

type Shared = Arc<Transmitter>;

/// The routes, for merging into the REST listener's application.
pub fn router(tx: Shared) -> Router {
    Router::new()
        .route("/.well-known/ssf-configuration", get(discovery))
        .route(
            "/.well-known/ssf-configuration/{*issuer_path}",
            get(discovery_at),
        )
        .route("/ssf/jwks.json", get(jwks))
        .route(
            "/ssf/streams",
            get(read_streams)
                .post(create_stream)
                .patch(update_stream)
                .put(replace_stream)
                .delete(delete_stream),
        )
        .route("/ssf/status", get(read_status).post(update_status))
        .route("/ssf/subjects/add", post(add_subject))
        .route("/ssf/subjects/remove", post(remove_subject))
        .route("/ssf/verify", post(verify))
        .route("/ssf/poll/{stream_id}", post(poll))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(tx)
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The transmitter configuration metadata.
pub fn metadata(issuer: &str) -> Value {
    json!({
        "spec_version": "1_0",
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/ssf/jwks.json"),
        "delivery_methods_supported": [PUSH, POLL],
        "configuration_endpoint": format!("{issuer}/ssf/streams"),
        "status_endpoint": format!("{issuer}/ssf/status"),
        "add_subject_endpoint": format!("{issuer}/ssf/subjects/add"),
        "remove_subject_endpoint": format!("{issuer}/ssf/subjects/remove"),
        "verification_endpoint": format!("{issuer}/ssf/verify"),
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
        "default_subjects": "ALL",
    })
}

async fn discovery(State(tx): State<Shared>) -> Response {
    Json(metadata(tx.issuer())).into_response()
}

/// The metadata of an issuer with a path: SSF puts the path after the
/// well-known name.
async fn discovery_at(State(tx): State<Shared>, Path(path): Path<String>) -> Response {
    let issuer_path = tx
        .issuer()
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, p)| p.trim_end_matches('/'));
    if issuer_path == Some(path.trim_end_matches('/')) {
        Json(metadata(tx.issuer())).into_response()
    } else {
        SsfError::new(StatusCode::NOT_FOUND, "not_found", "no such issuer").into_response()
    }
}

async fn jwks(State(tx): State<Shared>) -> Response {
    let mut r = Json(tx.keys().jwks()).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// The bearer token of `Authorization`, never one from the query string.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn caller(
    tx: &Transmitter,
    headers: &HeaderMap,
    peer: Caller,
) -> Result<Principal, SsfError> {
    let address = peer.address.map(|a| a.to_string());
    tx.authorize(bearer(headers), address.as_deref()).await
}

fn body(b: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, SsfError> {
    match b {
        Ok(b) => stream::object(&b),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(SsfError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("the body is larger than {MAX_BODY} bytes"),
        )),
        Err(e) => Err(SsfError::bad(format!("cannot read the body: {e}"))),
    }
}

fn answer(r: Result<Response, SsfError>) -> Response {
    no_store(r.unwrap_or_else(IntoResponse::into_response))
}

#[derive(serde::Deserialize)]
struct StreamQuery {
    stream_id: Option<String>,
}

fn query_id(
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Option<String>, SsfError> {
    let Query(q) = q.map_err(|e| SsfError::bad(format!("bad query: {e}")))?;
    match q.stream_id {
        Some(id) if id.len() > 64 => Err(SsfError::bad("stream_id is longer than 64 bytes")),
        other => Ok(other),
    }
}

async fn read_streams(
    State(tx): State<Shared>,
    peer: Caller,
    headers: HeaderMap,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    answer(
        async {
            let who = caller(&tx, &headers, peer).await?;
            let id = query_id(q)?;
            Ok(Json(tx.read(&who, id.as_deref()).await?).into_response())
        }
        .await,
    )
}

async fn create_stream(
    State(tx): State<Shared>,
    peer: Caller,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    answer(
        async {
            let who = caller(&tx, &headers, peer).await?;
            let m = body(b)?;
            Ok((StatusCode::CREATED, Json(tx.create(&who, &m).await?)).into_response())
        }
        .await,
    )
}

async fn update_stream(
    State(tx): State<Shared>,
    peer: Caller,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    answer(
        async {
            let who = caller(&tx, &headers, peer).await?;
            let m = body(b)?;
            Ok(Json(tx.modify(&who, &m, false).await?).into_response())
        }
        .await,
    )
}

async fn replace_stream(
    State(tx): State<Shared>,
    peer: Caller,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    answer(
        async {
            let who = caller(&tx, &headers, peer).await?;
            let m = body(b)?;
            Ok(Json(tx.modify(&who, &m, true).await?).into_response())
        }
        .await,
    )
}

async fn delete_stream(
    State(tx): State<Shared>,
    peer: Caller,
    headers: HeaderMap,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    answer(
        async {
            let who = caller(&tx, &headers, peer).await?;
            let id = query_id(q)?.ok_or_else(|| SsfError::bad("stream_id is required"))?;
            tx.delete(&who, &id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

async fn read_status(
    State(tx): State<Shared>,
    peer: Caller,
    headers: HeaderMap,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    answer(
        async {
            let who = caller(&tx, &headers, peer).await?;
            let id = query_id(q)?.ok_or_else(|| SsfError::bad("stream_id is required"))?;
            Ok(Json(tx.status(&who, &id).await?).into_response())
        }
        .await,
    )
}

async fn update_status(
    State(tx): State<Shared>,
    peer: Caller,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    answer(
        async {
            let who = caller(&tx, &headers, peer).await?;
            let m = body(b)?;
            Ok(Json(tx.set_status(&who, &m).await?).into_response())
        }
        .await,
    )
}

async fn add_subject(
    State(tx): State<Shared>,
    peer: Caller,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    answer(
        async {
            let who = caller(&tx, &headers, peer).await?;
            let m = body(b)?;
            tx.add_subject(&who, &m).await?;
            Ok(StatusCode::OK.into_response())
        }
        .await,
    )
}

async fn remove_subject(
    State(tx): State<Shared>,
    peer: Caller,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    answer(
        async {
            let who = caller(&tx, &headers, peer).await?;
            let m = body(b)?;
            tx.remove_subject(&who, &m).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

async fn verify(
    State(tx): State<Shared>,
    peer: Caller,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    answer(
        async {
            let who = caller(&tx, &headers, peer).await?;
            let m = body(b)?;
            tx.verify(&who, &m).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

async fn poll(
    State(tx): State<Shared>,
    peer: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    answer(
        async {
            let who = caller(&tx, &headers, peer).await?;
            if id.len() > 64 {
                return Err(SsfError::not_found());
            }
            // An empty body is a poll with every default.
            let m = match &b {
                Ok(bytes) if bytes.is_empty() => Map::new(),
                _ => body(b)?,
            };
            Ok(Json(tx.poll(&who, &id, &m).await?).into_response())
        }
        .await,
    )
}

/// `POST /global-token-revocation`: an identity provider ends every
/// session of one user (the Global Token Revocation draft). Authorized by
/// the service credential. 204 once the sessions are ended; 400 for a
/// malformed request or a subject format other than `email` or `opaque`
/// (a username); 401; 404 for an unknown user; 422 when it cannot be done.
pub fn revocation_router(tx: Shared) -> Router {
    Router::new()
        .route("/global-token-revocation", post(global_token_revocation))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(tx)
}

async fn global_token_revocation(
    State(tx): State<Shared>,
    peer: Caller,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    answer(
        async {
            let who = caller(&tx, &headers, peer).await?;
            if !matches!(who, Principal::Service) {
                return Err(SsfError::new(
                    StatusCode::FORBIDDEN,
                    "access_denied",
                    "global token revocation is for identity providers (the service credential)",
                ));
            }
            let m = body(b)?;
            let Some(Value::Object(sub)) = m.get("sub_id") else {
                return Err(SsfError::bad(
                    "sub_id (a subject identifier object) is required",
                ));
            };
            let format = stream::string(sub, "format", 64)?
                .ok_or_else(|| SsfError::bad("sub_id.format is required"))?;
            let user = match format.as_str() {
                "email" => stream::string(sub, "email", 320)?,
                "opaque" => stream::string(sub, "id", 320)?,
                other => {
                    return Err(SsfError::bad(format!(
                    "subject format {other:?} is not supported: use email or opaque (a username)"
                )))
                }
            }
            .ok_or_else(|| SsfError::bad("the subject's identifier is missing"))?;
            match tx.sessions.revoke_user_globally(&user).await {
                Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
                Err(crate::domain::Error::NotFound(_)) => Err(SsfError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no such user",
                )),
                Err(crate::domain::Error::Unavailable(e)) => Err(SsfError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unable_to_log_out",
                    format!("the user's sessions could not be ended now: {e}"),
                )),
                Err(e) => Err(e.into()),
            }
        }
        .await,
    )
}
