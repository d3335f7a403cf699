//! What the gRPC service and the REST shim must agree on, below both of
//! them: the ErrorInfo vocabulary ([`Reason`]), the metadata names the shim
//! sends and the service reads, and the protobuf codec of the generated code.

pub mod codec;
mod reason;

pub use reason::{Reason, ERROR_DOMAIN};

/// Metadata carrying the caller's session token as `Bearer <token>`.
pub const AUTHORIZATION: &str = "authorization";

/// The scheme of [`AUTHORIZATION`] (matched case-insensitively).
pub const BEARER: &str = "Bearer";

/// Metadata carrying the shim's client address to the gRPC service; honoured
/// only from trusted peers and in-process calls (a network peer's own address
/// always wins otherwise).
pub const FORWARDED_FOR: &str = "x-forwarded-for";
