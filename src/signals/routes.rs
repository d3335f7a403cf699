//! The transmitter's HTTP routes on the REST listener: discovery, the
//! JWKS, stream management and the poll endpoints. Errors are JSON
//! `{"err", "description"}` with the status SSF names for each case.

use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, PathRejection};
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
pub(super) const MAX_BODY: usize = 64 * 1024;

pub(super) type Shared = Arc<Transmitter>;

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
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(tx)
}

/// A method a route does not serve: 405 in the same JSON error shape.
pub(super) async fn method_not_allowed() -> Response {
    no_store(
        SsfError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "this endpoint does not take this method",
        )
        .into_response(),
    )
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
async fn discovery_at(
    State(tx): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    // A path that is not UTF-8 names no issuer of ours.
    let Ok(Path(path)) = path else {
        return SsfError::new(StatusCode::NOT_FOUND, "not_found", "no such issuer").into_response();
    };
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
        HeaderValue::from_static("public, max-age=300"), // keys::JWKS_MAX_AGE
    );
    r
}

/// The bearer token of `Authorization`, never one from the query string.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub(super) async fn caller(
    tx: &Transmitter,
    headers: &HeaderMap,
    peer: Caller,
) -> Result<Principal, SsfError> {
    let address = peer.address.map(|a| a.to_string());
    tx.authorize(bearer(headers), address.as_deref()).await
}

pub(super) fn body(b: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, SsfError> {
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

pub(super) fn answer(r: Result<Response, SsfError>) -> Response {
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

/// The caller of a management route, authorized (401 otherwise) before
/// anything else of the request is looked at.
struct Authorized {
    tx: Shared,
    who: Principal,
}

impl axum::extract::FromRequestParts<Shared> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        tx: &Shared,
    ) -> Result<Self, Response> {
        let Ok(peer) = Caller::from_request_parts(parts, tx).await;
        match caller(tx, &parts.headers, peer).await {
            Ok(who) => Ok(Authorized {
                tx: tx.clone(),
                who,
            }),
            Err(e) => Err(answer(Err(e))),
        }
    }
}

/// An authorized caller and its JSON object body (400 or 413 otherwise).
struct WithBody {
    tx: Shared,
    who: Principal,
    m: Map<String, Value>,
}

impl axum::extract::FromRequest<Shared> for WithBody {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, tx: &Shared) -> Result<Self, Response> {
        use axum::extract::FromRequestParts as _;
        let (mut parts, b) = req.into_parts();
        let a = Authorized::from_request_parts(&mut parts, tx).await?;
        let bytes = Bytes::from_request(axum::extract::Request::from_parts(parts, b), tx).await;
        match body(bytes) {
            Ok(m) => Ok(WithBody {
                tx: a.tx,
                who: a.who,
                m,
            }),
            Err(e) => Err(answer(Err(e))),
        }
    }
}

async fn read_streams(
    a: Authorized,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    answer(
        async {
            let id = query_id(q)?;
            Ok(Json(a.tx.read(&a.who, id.as_deref()).await?).into_response())
        }
        .await,
    )
}

async fn create_stream(r: WithBody) -> Response {
    answer(
        r.tx.create(&r.who, &r.m)
            .await
            .map(|c| (StatusCode::CREATED, Json(c)).into_response()),
    )
}

async fn update_stream(r: WithBody) -> Response {
    answer(
        r.tx.modify(&r.who, &r.m, false)
            .await
            .map(|c| Json(c).into_response()),
    )
}

async fn replace_stream(r: WithBody) -> Response {
    answer(
        r.tx.modify(&r.who, &r.m, true)
            .await
            .map(|c| Json(c).into_response()),
    )
}

async fn delete_stream(
    a: Authorized,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    answer(
        async {
            let id = query_id(q)?.ok_or_else(|| SsfError::bad("stream_id is required"))?;
            a.tx.delete(&a.who, &id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

async fn read_status(
    a: Authorized,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    answer(
        async {
            let id = query_id(q)?.ok_or_else(|| SsfError::bad("stream_id is required"))?;
            Ok(Json(a.tx.status(&a.who, &id).await?).into_response())
        }
        .await,
    )
}

async fn update_status(r: WithBody) -> Response {
    answer(
        r.tx.set_status(&r.who, &r.m)
            .await
            .map(|c| Json(c).into_response()),
    )
}

async fn add_subject(r: WithBody) -> Response {
    answer(
        r.tx.add_subject(&r.who, &r.m)
            .await
            .map(|()| StatusCode::OK.into_response()),
    )
}

async fn remove_subject(r: WithBody) -> Response {
    answer(
        r.tx.remove_subject(&r.who, &r.m)
            .await
            .map(|()| StatusCode::NO_CONTENT.into_response()),
    )
}

async fn verify(r: WithBody) -> Response {
    answer(
        r.tx.verify(&r.who, &r.m)
            .await
            .map(|()| StatusCode::NO_CONTENT.into_response()),
    )
}

async fn poll(
    a: Authorized,
    id: Result<Path<String>, PathRejection>,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let Authorized { tx, who } = a;
    answer(
        async {
            // A stream id that is not UTF-8 is no stream's.
            let Ok(Path(id)) = id else {
                return Err(SsfError::not_found());
            };
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
