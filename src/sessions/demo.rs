//! The demo users of `serve --demo`.

use super::Sessions;
use crate::domain::{Error, Result, Role};

/// Whether `username` is one of [`DEMO_USERS`] (whose passwords are published).
pub fn is_demo_user(username: &str) -> bool {
    DEMO_USERS.iter().any(|(name, ..)| *name == username)
}

/// The demo users, taken from the examples in the vendors' documentation
/// (OpenSRS Email API, Informatica Cloud REST API v2).
pub const DEMO_USERS: &[(&str, &str, &str, Role)] = &[
    (
        "domain_admin@example.com",
        "pencil75",
        "example.com",
        Role::Admin,
    ),
    (
        "joe_user@example.com",
        "joe-pass-1",
        "example.com",
        Role::User,
    ),
    (
        "useremail@company.com",
        "mypassword",
        "company.com",
        Role::User,
    ),
    (
        "admin@company.com",
        "admin-pass-1",
        "company.com",
        Role::Admin,
    ),
];

impl Sessions {
    /// Creates the demo users that do not exist yet (existing ones are left as they are).
    pub async fn ensure_demo_users(&self) -> Result<usize> {
        let mut created = 0;
        for (username, password, org, role) in DEMO_USERS {
            match self.add_user(username, org, *role, password).await {
                Ok(_) => created += 1,
                Err(Error::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(created)
    }
}
