//! Plain types and rules, no I/O: sessions, users, kinds, tokens, passwords,
//! input limits, the authority policy and the one error enum.

pub mod cursor;
mod error;
mod kind;
pub mod limits;
pub mod password;
pub mod policy;
pub mod rate;
mod session;
pub mod throttle;
pub mod token;

pub use error::{AuthFailure, Error, NotFound, Result};
pub use kind::{EndReason, Kind, Role};
pub use session::{
    Actor, Audit, AuditRecord, ClientInfo, Millis, NewSession, NewUser, Revocation, Session, User,
    UserRecord,
};
pub use token::{Token, TokenDigest};
