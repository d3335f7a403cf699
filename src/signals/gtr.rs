//! Global Token Revocation, inbound (the OAuth Global Token Revocation
//! draft): an identity provider names a user and every session of that
//! user ends. Its own state (the identity providers and their secrets), its
//! own authorization, and the draft's answers; the ending is
//! [`Sessions::revoke_user_globally`](crate::sessions::Sessions::revoke_user_globally).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::routes::{answer, bearer, body, caller, Shared, MAX_BODY};
use super::stream;
use super::SsfError;
use crate::domain::{self, limits};
use crate::rest::Caller;
use crate::sessions::{Principal, ServiceCredential};

/// `POST /global-token-revocation`: an identity provider ends every
/// session of one user (the Global Token Revocation draft). Authorized by
/// the service credential or an identity provider's own secret
/// ([`IdentityProvider`]), which reaches only the users of its org when it
/// has one. 204 once the sessions are ended; 400 for a malformed request or
/// an unsupported subject (a format other than `email`, `opaque` (a
/// username) or `iss_sub` of a configured issuer); 401; 403 for an admin's
/// token; 404 for an unknown user or one outside the identity provider's
/// org (alike, so a tenant learns nothing of another's users); 422 when it
/// cannot be done now.
pub fn revocation_router(tx: Shared, idps: Vec<IdentityProvider>) -> Router {
    Router::new()
        .route("/global-token-revocation", post(global_token_revocation))
        .method_not_allowed_fallback(super::routes::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(Revocation {
            tx,
            idps: idps.into(),
        })
}

#[derive(Clone)]
struct Revocation {
    tx: Shared,
    idps: Arc<[IdentityProvider]>,
}

/// An identity provider that may call Global Token Revocation with its own
/// bearer secret (`gtr_idp`). Only the secret's SHA-256 is kept, compared
/// in constant time; `Debug` shows the name, org and issuer, never the
/// secret.
#[derive(Clone)]
pub struct IdentityProvider {
    name: String,
    digest: [u8; 32],
    /// The only org whose users it may name; `None`: every org.
    org: Option<String>,
    /// Its issuer, for `iss_sub` subjects.
    iss: Option<String>,
}

impl std::fmt::Debug for IdentityProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityProvider")
            .field("name", &self.name)
            .field("org", &self.org)
            .field("iss", &self.iss)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl IdentityProvider {
    /// Most identity providers configured.
    pub const MAX_COUNT: usize = 64;
    /// Longest name.
    pub const MAX_NAME: usize = 64;
    /// Longest secret (the shortest, and the variety asked, are the service
    /// credential's).
    pub const MAX_SECRET: usize = 1024;
    /// Longest issuer.
    pub const MAX_ISS: usize = 512;

    /// Checks every field. Surrounding whitespace of the secret (a file's
    /// trailing newline) is not part of it; the rest must be fit to send as
    /// a bearer token.
    pub fn new(
        name: &str,
        secret: &str,
        org: Option<&str>,
        iss: Option<&str>,
    ) -> Result<Self, String> {
        if name.is_empty()
            || name.len() > Self::MAX_NAME
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "identity provider name {name:?}: 1 to {} letters, digits, '-', '_' or '.'",
                Self::MAX_NAME
            ));
        }
        let secret = secret.trim();
        let (min, max) = (ServiceCredential::MIN_LEN, Self::MAX_SECRET);
        if secret.len() < min || secret.len() > max {
            return Err(format!(
                "identity provider {name}: the secret must be {min} to {max} characters"
            ));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "identity provider {name}: the secret must be printable ASCII without spaces \
                 (it is sent as a bearer token)"
            ));
        }
        if secret.bytes().collect::<BTreeSet<u8>>().len() < ServiceCredential::MIN_DISTINCT {
            return Err(format!(
                "identity provider {name}: the secret is too predictable: it must use at least {} \
                 different characters (e.g. `openssl rand -hex 32`)",
                ServiceCredential::MIN_DISTINCT
            ));
        }
        let org = org
            .map(|o| limits::org(o).map_err(|e| format!("identity provider {name}: {e}")))
            .transpose()?;
        if let Some(i) = iss {
            if i.is_empty()
                || i.len() > Self::MAX_ISS
                || i.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(format!(
                    "identity provider {name}: iss must be 1 to {} bytes without spaces",
                    Self::MAX_ISS
                ));
            }
        }
        Ok(IdentityProvider {
            name: name.to_owned(),
            digest: Sha256::digest(secret.as_bytes()).into(),
            org,
            iss: iss.map(str::to_owned),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn org(&self) -> Option<&str> {
        self.org.as_deref()
    }

    pub fn iss(&self) -> Option<&str> {
        self.iss.as_deref()
    }

    /// Whether `presented` is this provider's secret, in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        self.matches_digest(&Sha256::digest(presented.trim().as_bytes()).into())
    }

    fn matches_digest(&self, digest: &[u8; 32]) -> bool {
        bool::from(digest.ct_eq(&self.digest))
    }

    /// What the providers must be together: not too many, and no two with
    /// one name, one issuer (an `iss_sub` would not say whose user it names)
    /// or one secret (a call would not say who made it).
    pub fn check_all(idps: &[IdentityProvider]) -> Result<(), String> {
        if idps.len() > Self::MAX_COUNT {
            return Err(format!(
                "at most {} identity providers, not {}",
                Self::MAX_COUNT,
                idps.len()
            ));
        }
        for (i, a) in idps.iter().enumerate() {
            for b in &idps[..i] {
                if a.name.eq_ignore_ascii_case(&b.name) {
                    return Err(format!("identity provider {} is configured twice", a.name));
                }
                if a.iss.is_some() && a.iss == b.iss {
                    return Err(format!(
                        "identity providers {} and {} have the same iss",
                        b.name, a.name
                    ));
                }
                if a.matches_digest(&b.digest) {
                    return Err(format!(
                        "identity providers {} and {} have the same secret; give each its own",
                        b.name, a.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Who called: the service credential (any org) or an identity provider.
enum Revoker<'a> {
    Service,
    Idp(&'a IdentityProvider),
}

impl Revoker<'_> {
    /// The audit trail's actor: the identity provider by name.
    fn actor(&self) -> String {
        match self {
            Revoker::Service => "identity-provider".to_owned(),
            Revoker::Idp(idp) => format!("identity-provider:{}", idp.name),
        }
    }
}

async fn revoker<'a>(
    st: &'a Revocation,
    headers: &HeaderMap,
    peer: Caller,
) -> Result<Revoker<'a>, SsfError> {
    // Identity providers first: their secrets are no session tokens, and
    // the session check would count each call as a failed attempt against
    // the provider's address. Every secret is compared, so the time taken
    // does not tell which one matched.
    // A locked-out address is refused before any secret is compared, so
    // guessing a provider's secret is slowed like guessing a password.
    let address = peer.address.map(|a| a.to_string());
    st.tx
        .sessions
        .check_address_lockout(address.as_deref())
        .await?;
    if let Some(token) = bearer(headers) {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let found = st.idps.iter().fold(None, |found, idp| {
            if idp.matches_digest(&digest) {
                Some(idp)
            } else {
                found
            }
        });
        if let Some(idp) = found {
            return Ok(Revoker::Idp(idp));
        }
    }
    match caller(&st.tx, headers, peer).await? {
        Principal::Service => Ok(Revoker::Service),
        Principal::Admin(_) => Err(SsfError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "global token revocation is for identity providers \
             (the service credential or an identity provider's secret)",
        )),
    }
}

/// The username `sub_id` names, and the org that user must be in (`None`:
/// any). `email` and `opaque` are bounded by the caller's org; `iss_sub`,
/// whose `sub` is the username, by its issuer's, whoever calls: an
/// identity provider may use only its own issuer, the service credential
/// any configured one.
fn subject<'a>(
    who: &Revoker<'a>,
    idps: &'a [IdentityProvider],
    m: &Map<String, Value>,
) -> Result<(String, Option<&'a str>), SsfError> {
    let Some(Value::Object(sub)) = m.get("sub_id") else {
        return Err(SsfError::bad(
            "sub_id (a subject identifier object) is required",
        ));
    };
    let format = stream::string(sub, "format", 64)?
        .ok_or_else(|| SsfError::bad("sub_id.format is required"))?;
    let caller_org = match who {
        Revoker::Service => None,
        Revoker::Idp(idp) => idp.org(),
    };
    let (user, org) = match format.as_str() {
        "email" => (stream::string(sub, "email", 320)?, caller_org),
        "opaque" => (stream::string(sub, "id", 320)?, caller_org),
        "iss_sub" => {
            let iss = stream::string(sub, "iss", IdentityProvider::MAX_ISS)?
                .ok_or_else(|| SsfError::bad("sub_id.iss is required"))?;
            let issuer = match who {
                Revoker::Idp(idp) => Some(*idp).filter(|i| i.iss() == Some(iss.as_str())),
                Revoker::Service => idps.iter().find(|i| i.iss() == Some(iss.as_str())),
            }
            .ok_or_else(|| {
                SsfError::bad(
                    "subject format iss_sub: the issuer is not one this caller may name \
                     (an identity provider's configured iss)",
                )
            })?;
            (stream::string(sub, "sub", 320)?, issuer.org())
        }
        other => {
            return Err(SsfError::bad(format!(
                "subject format {other:?} is not supported: use email, opaque (a username) \
                 or iss_sub (of a configured issuer)"
            )))
        }
    };
    let user = user.ok_or_else(|| SsfError::bad("the subject's identifier is missing"))?;
    Ok((user, org))
}

async fn global_token_revocation(
    State(st): State<Revocation>,
    peer: Caller,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    answer(
        async {
            let who = revoker(&st, &headers, peer).await?;
            let m = body(b)?;
            let (user, org) = subject(&who, &st.idps, &m)?;
            let sessions = &st.tx.sessions;
            match sessions
                .revoke_user_globally(&user, org, &who.actor())
                .await
            {
                Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
                Err(domain::Error::NotFound(_)) => Err(SsfError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no such user",
                )),
                Err(domain::Error::Unavailable(e)) => Err(SsfError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unable_to_log_out",
                    format!("the user's sessions could not be ended now: {e}"),
                )),
                Err(e) => Err(e.into()),
            }
        }
        .await,
    )
}
