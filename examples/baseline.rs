//! The performance baseline: a bare tonic server speaking the same
//! `session.v1.SessionService` (same generated code and codec) that answers
//! ValidateSession and Login with constants: no store, no hashing, no work.
//! Benchmarks report sessiond's figures as a ratio to this, measured in the
//! same run, on the same machine.
//!
//! ```sh
//! cargo run --release --example baseline -- --addr 127.0.0.1:50061
//! # the constants behind sessiond's connection rules and call layer:
//! cargo run --release --example baseline -- --addr 127.0.0.1:50062 --sessiond-layers
//! ```

use std::net::SocketAddr;

use sessiond::pb::session_service_server::{SessionService, SessionServiceServer};
use sessiond::pb::*;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

fn constant_session() -> Session {
    Session {
        id: 1,
        kind: Kind::Api as i32,
        user: "joe_user@example.com".into(),
        org: "example.com".into(),
        created_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        last_seen_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        expires_at: Some(prost_types::Timestamp {
            seconds: 1_700_043_200,
            nanos: 0,
        }),
        idle_expires_at: Some(prost_types::Timestamp {
            seconds: 1_700_001_800,
            nanos: 0,
        }),
        client: None,
        peer_address: String::new(),
    }
}

struct Constant;

#[tonic::async_trait]
impl SessionService for Constant {
    async fn login(&self, _: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        Ok(Response::new(LoginResponse {
            token: "qN0bVCFpfTdpkDh2kwmWTXDmWR3FvoTsrk12tVru5ns".into(),
            session: Some(constant_session()),
        }))
    }

    async fn validate_session(
        &self,
        _: Request<ValidateSessionRequest>,
    ) -> Result<Response<ValidateSessionResponse>, Status> {
        Ok(Response::new(ValidateSessionResponse {
            session: Some(constant_session()),
        }))
    }

    async fn logoff(&self, _: Request<LogoffRequest>) -> Result<Response<LogoffResponse>, Status> {
        Ok(Response::new(LogoffResponse { session_id: 1 }))
    }

    async fn logoff_other(
        &self,
        _: Request<LogoffOtherRequest>,
    ) -> Result<Response<LogoffOtherResponse>, Status> {
        Err(Status::unimplemented(
            "baseline answers Login, ValidateSession and Logoff only",
        ))
    }

    async fn logout_user(
        &self,
        _: Request<LogoutUserRequest>,
    ) -> Result<Response<LogoutUserResponse>, Status> {
        Err(Status::unimplemented(
            "baseline answers Login, ValidateSession and Logoff only",
        ))
    }

    async fn logout_all(
        &self,
        _: Request<LogoutAllRequest>,
    ) -> Result<Response<LogoutAllResponse>, Status> {
        Err(Status::unimplemented(
            "baseline answers Login, ValidateSession and Logoff only",
        ))
    }

    async fn list_sessions(
        &self,
        _: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        Err(Status::unimplemented(
            "baseline answers Login, ValidateSession and Logoff only",
        ))
    }

    async fn end_user_sessions(
        &self,
        _: Request<EndUserSessionsRequest>,
    ) -> Result<Response<EndUserSessionsResponse>, Status> {
        Err(Status::unimplemented(
            "baseline answers Login, ValidateSession and Logoff only",
        ))
    }

    async fn change_password(
        &self,
        _: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        Err(Status::unimplemented(
            "baseline answers Login, ValidateSession and Logoff only",
        ))
    }

    async fn list_audit_records(
        &self,
        _: Request<ListAuditRecordsRequest>,
    ) -> Result<Response<ListAuditRecordsResponse>, Status> {
        Err(Status::unimplemented(
            "baseline answers Login, ValidateSession and Logoff only",
        ))
    }

    type WatchRevocationsStream = ReceiverStream<Result<WatchRevocationsResponse, Status>>;

    async fn watch_revocations(
        &self,
        _: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        Err(Status::unimplemented(
            "baseline answers Login, ValidateSession and Logoff only",
        ))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = args
        .iter()
        .position(|a| a == "--addr")
        .and_then(|i| args.get(i + 1))
        .map_or("127.0.0.1:50061", String::as_str)
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("baseline listening on {}", listener.local_addr()?);
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if args.iter().any(|a| a == "--sessiond-layers") {
        // The same constants behind what sessiond puts in front of every
        // call: the connection rules, the per-call layer, HTTP/2 keepalive
        // and the stream limit; the difference to sessiond is then the
        // handler and the store alone.
        let limits = sessiond::net::ConnLimits::default();
        let calls = sessiond::grpc::CallLayer::new(
            sessiond::grpc::DEFAULT_MAX_IN_FLIGHT,
            sessiond::grpc::DEFAULT_MAX_QUEUE_DELAY,
        );
        tonic::transport::Server::builder()
            .max_concurrent_streams(Some(1024))
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .layer(sessiond::net::ConnectionLayer)
            .layer(calls)
            .add_service(SessionServiceServer::new(Constant))
            .serve_with_incoming_shutdown(
                sessiond::net::Gate::new("grpc", limits).incoming(listener),
                stop,
            )
            .await?;
        return Ok(());
    }
    tonic::transport::Server::builder()
        .add_service(SessionServiceServer::new(Constant))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stop)
        .await?;
    Ok(())
}
