//! The whole integration suite, one binary (one link instead of one per
//! file). Every module starts the real server on ephemeral ports and talks
//! to it with real clients; `support` has the shared pieces.

mod support;

mod abuse;
mod authz_matrix;
mod bench_tools;
mod connection_limits;
mod console;
mod console_grpc_web;
mod crash;
mod day_one;
mod edge;
mod end_user_sessions;
mod forward_auth_nginx;
mod global_token_revocation;
mod grpc_audit;
mod grpc_bad_input;
mod grpc_endings;
mod grpc_list;
mod grpc_login_validate;
mod grpc_server_features;
mod grpc_watch;
mod linearizability;
mod mail_frontend;
mod metrics_overload;
mod observability;
mod openapi;
mod properties;
mod readme_examples;
mod redis_cluster;
mod redis_replicas;
mod rest_equivalence;
mod rest_hostile;
mod rest_informatica;
mod rest_oma;
mod rest_overload;
mod rest_ras;
mod rest_standalone;
mod restart;
mod server_url;
mod signals;
mod signals_durability;
mod store_conformance;
mod store_sqlite;
mod tls;
mod tracing_otlp;
