//! sessiond: a session-management service. gRPC first (`session.v1`), an
//! embedded SQLite store by default.
//!
//! Data flows one way: REST JSON -> `rest::<vendor>` -> gRPC -> `grpc` ->
//! `sessions` -> `store`. What both ends of the gRPC hop agree on (error
//! reasons, metadata names, the codec) is in `wire`, below both.

pub mod cli;
pub mod config;
pub mod console;
pub mod domain;
pub mod edge;
pub mod grpc;
pub mod logging;
pub mod net;
pub mod otel;
pub mod rest;
pub mod server;
pub mod sessions;
pub mod signals;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod validator;
pub mod wire;

/// Generated protobuf types and the tonic service and client for `session.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("session.v1");

    /// The encoded descriptor set served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/session_descriptor.bin"));
}
