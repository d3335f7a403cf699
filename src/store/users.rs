//! The users job: accounts, their passwords and their disabling.

use async_trait::async_trait;

use crate::domain::{Actor, Millis, NewUser, Result, User, UserRecord};

/// Users of every org. Disabling and deleting end the user's sessions in
/// the same atomic change, so they sit here rather than with the endings.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Fails with `AlreadyExists` when the username is taken.
    async fn create_user(&self, user: NewUser) -> Result<User>;
    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>>;
    async fn list_users(&self) -> Result<Vec<User>>;
    /// False when there is no such user.
    async fn set_password(&self, username: &str, password_hash: String) -> Result<bool>;
    /// Replaces the user's password hash only while it is still `old` (a
    /// rehash at a new cost after a successful login must never undo a
    /// password change that landed meanwhile). True when replaced.
    async fn rehash_password(&self, username: &str, old: &str, new: String) -> Result<bool>;
    /// Disabling also ends every live session of the user (as LOGOFF_OTHER) in
    /// the same transaction, audited as done by `actor`. False when there is
    /// no such user.
    async fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
        now: Millis,
        actor: &Actor,
    ) -> Result<bool>;
    /// Ends the user's live sessions (recorded like a disable) and removes
    /// the user, so its name can be reused; events and audit records stay.
    /// False when there is no such user.
    async fn delete_user(&self, username: &str, now: Millis, actor: &Actor) -> Result<bool>;
}
