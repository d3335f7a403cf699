//! The admin console, served at `/console/` on the REST listener: the
//! committed bundle in `console/dist/` (built from `console/src/` by
//! `npm run build`), embedded in the binary, and the gRPC-Web door the page
//! calls `session.v1.SessionService` through. That door is `tonic-web` in
//! front of the same service and the same [`CallLayer`] as the gRPC
//! listener, so admission, shedding, metrics and tracing are the same for a
//! browser as for any other client.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::extract::{ConnectInfo, Path};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use tonic::transport::server::TcpConnectInfo;

use crate::grpc::{CallLayer, SessionGrpc};
use crate::pb::session_service_server::SessionServiceServer;

/// Where the page lives.
pub const PATH: &str = "/console/";

/// The page's own files only: no inline script or style, nothing from
/// another origin, never framed. `connect-src 'self'` is the gRPC-Web door.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 4] = [
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../console/dist/index.html"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../console/dist/console.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../console/dist/console.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../console/dist/icon.svg"),
    },
];

/// Each asset's strong ETag (a digest of its bytes), computed once: the
/// browser revalidates (`no-cache`) and gets a 304 when nothing changed, so
/// a new sessiond's console is never served stale.
fn etags() -> &'static [String; 4] {
    static ETAGS: OnceLock<[String; 4]> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS.each_ref().map(|a| {
            let digest = Sha256::digest(a.body);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
    })
}

/// The console's routes: its files and the gRPC-Web door, over `grpc`
/// behind `calls`.
pub fn router(grpc: SessionGrpc, calls: CallLayer) -> Router {
    let door = tower::ServiceBuilder::new()
        .map_request(with_peer::<axum::body::Body>)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(calls)
        .service(SessionServiceServer::new(grpc));
    let door = Router::new()
        .route_service("/session.v1.SessionService/{rpc}", door)
        .route_layer(axum::middleware::from_fn(grpc_web_only));
    Router::new()
        .route("/console", get(|| async { Redirect::permanent(PATH) }))
        .route(
            PATH,
            get(|headers: HeaderMap| async move { serve(0, &headers) }),
        )
        .route("/console/{file}", get(file))
        .merge(door)
}

/// The door takes gRPC-Web only. tonic-web would pass any other HTTP/2
/// request on to the service: native gRPC has its own listener, and a
/// stray request is the caller's mistake (405, 415), not a failed call.
async fn grpc_web_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.method() != http::Method::POST {
        let mut h = security_headers();
        h.insert(header::ALLOW, HeaderValue::from_static("POST"));
        return (StatusCode::METHOD_NOT_ALLOWED, h, "gRPC-Web: POST only\n").into_response();
    }
    let grpc_web = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc-web"));
    if !grpc_web {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            security_headers(),
            "gRPC-Web only: application/grpc-web+proto or application/grpc-web-text+proto\n",
        )
            .into_response();
    }
    next.run(req).await
}

/// The HTTP connection's peer, where the service reads a gRPC caller's
/// address (throttling, the session's recorded peer address).
fn with_peer<B>(mut req: http::Request<B>) -> http::Request<B> {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        req.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer),
        });
    }
    req
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == name) {
        Some(i) => serve(i, &headers),
        None => (
            StatusCode::NOT_FOUND,
            security_headers(),
            "no such file in the console\n",
        )
            .into_response(),
    }
}

fn serve(i: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let mut out = security_headers();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        out.insert(header::ETAG, v);
    }
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    (out, asset.body).into_response()
}

fn security_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_etag() {
        let tags = etags();
        for (i, a) in tags.iter().enumerate() {
            assert!(a.starts_with('"') && a.ends_with('"') && a.len() == 26);
            assert!(tags[i + 1..].iter().all(|b| b != a));
        }
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap_or_default();
        assert!(!html.contains("<script>"), "no inline script");
        assert!(!html.contains("style="), "no inline style");
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
