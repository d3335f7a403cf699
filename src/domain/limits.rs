//! Limits on every input field, and the normal form of names.

use super::Error;

/// Longest username (the longest valid email address).
pub const MAX_USERNAME: usize = 254;
/// Longest password accepted; longer ones are refused before hashing.
pub const MAX_PASSWORD: usize = 1024;
/// Longest organization name.
pub const MAX_ORG: usize = 253;
/// Longest client address.
pub const MAX_CLIENT_ADDRESS: usize = 255;
/// Longest user agent / client name.
pub const MAX_USER_AGENT: usize = 512;
/// Default and largest ListSessions page.
pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(field, format!("longer than {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// Lower-cases `value`, with the limits applied to the result: lower-casing
/// can lengthen a string (`Ⱥ` is 2 bytes, `ⱥ` 3), and the stored form is what
/// must fit. Oversized input is refused before any work is done on it.
fn normalized(field: &'static str, value: &str, max: usize) -> Result<String, Error> {
    if value.len() > max.saturating_mul(2) {
        return Err(Error::invalid(field, format!("longer than {max} bytes")));
    }
    let lower = value.to_lowercase();
    check_text(field, &lower, max)?;
    if lower.chars().any(char::is_whitespace) {
        return Err(Error::invalid(field, "contains whitespace"));
    }
    Ok(lower)
}

/// Usernames are case-insensitive: the normal form is lower case, and
/// surrounding or inner whitespace is refused rather than guessed at.
pub fn username(field: &'static str, value: &str) -> Result<String, Error> {
    normalized(field, value, MAX_USERNAME)
}

/// A mailbox is a username that is also an email address (`local@domain`).
pub fn mailbox(field: &'static str, value: &str) -> Result<String, Error> {
    let name = username(field, value)?;
    match name.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.') =>
        {
            Ok(name)
        }
        _ => Err(Error::invalid(field, "not an email address")),
    }
}

pub fn password(field: &'static str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_PASSWORD {
        return Err(Error::invalid(
            field,
            format!("longer than {MAX_PASSWORD} bytes"),
        ));
    }
    Ok(())
}

pub fn org(value: &str) -> Result<String, Error> {
    normalized("org", value, MAX_ORG)
}

/// Optional free text (client address, user agent): empty means absent.
pub fn optional_text(
    field: &'static str,
    value: &str,
    max: usize,
) -> Result<Option<String>, Error> {
    if value.is_empty() {
        return Ok(None);
    }
    check_text(field, value, max)?;
    Ok(Some(value.to_owned()))
}

/// A username as it may appear in a log line: a short SHA-256 prefix, never
/// the name itself (people type passwords into username fields). An
/// operator matches it with `printf %s NAME | sha256sum | cut -c1-12`, after
/// lower-casing the name.
pub fn log_name(username: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(username.to_lowercase().as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_fold_case_and_refuse_junk() {
        assert_eq!(
            username("u", "Joe_User@Example.COM").unwrap(),
            "joe_user@example.com"
        );
        assert!(username("u", "").is_err());
        assert!(username("u", " joe").is_err());
        assert!(username("u", "jo\u{0}e").is_err());
        assert!(username("u", &"a".repeat(MAX_USERNAME + 1)).is_err());
        assert!(username("u", &"a".repeat(MAX_USERNAME)).is_ok());
        // The limit holds for the stored (lower-case) form, which can be longer.
        let grows = "\u{23a}".repeat(MAX_USERNAME / 2);
        assert_eq!(grows.len(), MAX_USERNAME);
        assert!(username("u", &grows).is_err());
    }

    #[test]
    fn mailboxes_must_be_addresses() {
        assert!(mailbox("user", "joe_user@example.com").is_ok());
        for bad in [
            "joe",
            "@example.com",
            "joe@",
            "a@b@c",
            "joe@.com",
            "joe@com.",
        ] {
            assert!(mailbox("user", bad).is_err(), "{bad}");
        }
    }
}
