//! The transmitter's signing keys: ES256 (P-256), from a PEM file or
//! generated at first start and kept in the store, so every replica signs
//! with the same key and publishes the same JWKS. `sessiond keys rotate`
//! adds a newer key; the older public key stays in the JWKS for a grace
//! period, so SETs it signed still verify at receivers that cached it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::domain::{Error, Millis, Result};
use crate::store::{SignalStore, SigningKeyRecord};

/// How long a retired key stays in the JWKS unless configured otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long receivers may cache the JWKS (its `Cache-Control: max-age`).
/// A new key is published this long before it signs, so a receiver holding
/// a cached JWKS never meets a `kid` it does not know.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// How long a rotated-in key is published before it signs: the JWKS cache
/// lifetime, plus a minute for every replica to have re-read the keys (they
/// do every 30 s), so no receiver's cached JWKS can lack it.
pub const KEY_AHEAD: Duration = Duration::from_secs(300 + 60);

/// One private key, ready to sign; never printed.
#[derive(Clone)]
struct SigningKey {
    kid: String,
    key: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The key that signs now and the public keys receivers may need.
#[derive(Debug, Clone)]
struct KeySet {
    signing: SigningKey,
    jwks: JwkSet,
}

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `--ssf-signing-key-file`: one key, PKCS#8 PEM; the store keeps none.
    File(std::path::PathBuf),
    /// Generated at first start and kept in the store; a key added by
    /// rotation signs once it has been published for `ahead`.
    Store { grace: Duration, ahead: Duration },
}

/// The signing keys of this process, refreshed from the store.
#[derive(Debug, Clone)]
pub struct Keys {
    current: Arc<RwLock<Arc<KeySet>>>,
    source: KeySource,
}

/// jsonwebtoken's crypto provider for this process: its RustCrypto one,
/// except that ES256 signs through ring. RustCrypto's signer derives the
/// public key again from the PKCS#8 document at every SET and computes a
/// recovery id no JWS needs, about five times ring's work per signature; a
/// bulk ending signs one SET per session per stream.
static PROVIDER: std::sync::LazyLock<jsonwebtoken::crypto::CryptoProvider> =
    std::sync::LazyLock::new(|| {
        let base = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
        jsonwebtoken::crypto::CryptoProvider {
            signer_factory: ring_signer,
            verifier_factory: base.verifier_factory,
            key_utils: base.key_utils.clone(),
        }
    });

/// Installs [`PROVIDER`] before this process's first JOSE operation.
fn jose() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if jsonwebtoken::crypto::CryptoProvider::install_default(&PROVIDER).is_err() {
            tracing::debug!("jsonwebtoken's crypto provider was chosen before ours");
        }
    });
}

/// An ES256 signer over a parsed ring key pair.
struct RingEs256(Arc<ring::signature::EcdsaKeyPair>);

impl signature::Signer<Vec<u8>> for RingEs256 {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let rng = ring::rand::SystemRandom::new();
        self.0
            .sign(&rng, msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| signature::Error::new())
    }
}

impl jsonwebtoken::crypto::JwtSigner for RingEs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

/// The signer of `key`: ring for ES256 (each key parsed once; a process
/// signs with one key at a time), RustCrypto for anything else.
fn ring_signer(
    alg: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn jsonwebtoken::crypto::JwtSigner>> {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    type Parsed = Option<(Vec<u8>, Arc<EcdsaKeyPair>)>;
    static LAST: std::sync::Mutex<Parsed> = std::sync::Mutex::new(None);
    if *alg != Algorithm::ES256 {
        return (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.signer_factory)(alg, key);
    }
    let der = key.as_bytes();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, pair)) = last.as_ref().filter(|(d, _)| d.as_slice() == der) {
        return Ok(Box::new(RingEs256(pair.clone())));
    }
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
        .map(Arc::new)
        .map_err(|_| {
            jsonwebtoken::errors::Error::from(jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey)
        })?;
    *last = Some((der.to_vec(), pair.clone()));
    Ok(Box::new(RingEs256(pair)))
}

/// Whether `der` can sign here: the same signer the SETs use, so a key file
/// that parses but cannot sign (ring wants the public key inside the
/// PKCS#8 document) is refused at start, not at the first SET.
pub fn check_signs(der: &[u8]) -> Result<()> {
    jose();
    let key = EncodingKey::from_ec_der(der);
    let signer = ring_signer(&Algorithm::ES256, &key)
        .map_err(|e| Error::Internal(format!("the key cannot sign ES256: {e}")))?;
    signature::Signer::try_sign(&*signer, b"check")
        .map(|_| ())
        .map_err(|_| Error::Internal("the key cannot sign ES256".into()))
}

/// A new P-256 private key, PKCS#8 DER.
pub fn generate() -> Result<Vec<u8>> {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map(|doc| doc.as_ref().to_vec())
        .map_err(|_| Error::Internal("cannot generate a signing key".into()))
}

/// The public JWK of a PKCS#8 P-256 key, its `kid` the key's RFC 7638
/// thumbprint (so the same key has the same id everywhere).
fn public_jwk(der: &[u8]) -> Result<(EncodingKey, Jwk)> {
    jose();
    let key = EncodingKey::from_ec_der(der);
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)
        .map_err(|e| Error::Internal(format!("not a P-256 private key (PKCS#8): {e}")))?;
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| Error::Internal(format!("key thumbprint: {e}")))?;
    jwk.common.key_id = Some(kid);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
    Ok((key, jwk))
}

/// A stored key record for a new key.
pub fn record(der: Vec<u8>, created_at: Millis) -> Result<SigningKeyRecord> {
    let (_, jwk) = public_jwk(&der)?;
    Ok(SigningKeyRecord {
        kid: jwk.common.key_id.unwrap_or_default(),
        pkcs8: der,
        created_at,
    })
}

/// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
pub fn read_pem(path: &std::path::Path) -> Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::PrivatePkcs8KeyDer;
    let bad = |why: String| Error::Internal(format!("signing key {}: {why}", path.display()));
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let der = PrivatePkcs8KeyDer::from_pem_slice(&text).map_err(|_| {
        bad(
            "expected a PKCS#8 PEM private key (BEGIN PRIVATE KEY), e.g. from \
             `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`"
                .into(),
        )
    })?;
    Ok(der.secret_pkcs8_der().to_vec())
}

/// The keys still published at `now`: the newest, and each older one until
/// `grace` after the next newer key was made. Oldest first.
fn published(keys: &[SigningKeyRecord], now: Millis, grace: Duration) -> Vec<&SigningKeyRecord> {
    let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    keys.iter()
        .enumerate()
        .filter(|(i, _)| {
            keys.get(i + 1)
                .is_none_or(|next| next.created_at.saturating_add(grace) > now)
        })
        .map(|(_, k)| k)
        .collect()
}

/// Of `keys`, those retired longer ago than `grace` (safe to forget).
pub fn expired(keys: &[SigningKeyRecord], now: Millis, grace: Duration) -> Vec<String> {
    let keep: Vec<&str> = published(keys, now, grace)
        .iter()
        .map(|k| k.kid.as_str())
        .collect();
    keys.iter()
        .filter(|k| !keep.contains(&k.kid.as_str()))
        .map(|k| k.kid.clone())
        .collect()
}

/// Each key of `keys` (oldest first) with its age in seconds and its state
/// at `now`: `signing`, `next` (published, signs once published for
/// `ahead`), `published` (retired, still in the JWKS for `grace`) or
/// `expired` (forgotten at the next rotation).
pub fn describe(
    keys: &[SigningKeyRecord],
    now: Millis,
    grace: Duration,
    ahead: Duration,
) -> Vec<(String, i64, &'static str)> {
    let shown = published(keys, now, grace);
    let signs = shown
        .get(signing_index(&shown, now, ahead))
        .map(|k| k.kid.clone());
    let mut past_signing = false;
    keys.iter()
        .map(|k| {
            let state = if signs.as_deref() == Some(k.kid.as_str()) {
                past_signing = true;
                "signing"
            } else if past_signing {
                "next"
            } else if shown.iter().any(|s| s.kid == k.kid) {
                "published"
            } else {
                "expired"
            };
            let age = now.saturating_sub(k.created_at).max(0) / 1000;
            (k.kid.clone(), age, state)
        })
        .collect()
}

/// The index in `keys` (oldest first) of the key that signs at `now`: the
/// newest published at least `ahead` ago, or the oldest when none is (the
/// first key of a new store).
fn signing_index(keys: &[&SigningKeyRecord], now: Millis, ahead: Duration) -> usize {
    let ahead = i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX);
    keys.iter()
        .rposition(|k| k.created_at.saturating_add(ahead) <= now)
        .unwrap_or(0)
}

fn key_set(keys: &[&SigningKeyRecord], now: Millis, ahead: Duration) -> Result<KeySet> {
    let signs = signing_index(keys, now, ahead);
    let mut jwks = Vec::with_capacity(keys.len());
    let mut signing = None;
    for (i, k) in keys.iter().enumerate() {
        let (key, jwk) = public_jwk(&k.pkcs8)?;
        jwks.push(jwk);
        if i == signs {
            signing = Some(SigningKey {
                kid: k.kid.clone(),
                key,
            });
        }
    }
    let signing = signing.ok_or_else(|| Error::Internal("no signing key".into()))?;
    Ok(KeySet {
        signing,
        jwks: JwkSet { keys: jwks },
    })
}

impl Keys {
    /// Loads the keys: the file's, or the store's (making the first key when
    /// the store has none).
    pub async fn load(source: KeySource, store: &dyn SignalStore) -> Result<Self> {
        let set = Self::read(&source, store).await?;
        Ok(Keys {
            current: Arc::new(RwLock::new(Arc::new(set))),
            source,
        })
    }

    async fn read(source: &KeySource, store: &dyn SignalStore) -> Result<KeySet> {
        match source {
            KeySource::File(path) => {
                let der = read_pem(path)?;
                let rec = record(der, 0)?;
                key_set(&[&rec], 0, Duration::ZERO)
            }
            KeySource::Store { grace, ahead } => {
                let now = crate::sessions::now_millis();
                let mut keys = store.signing_keys().await?;
                if keys.is_empty() {
                    let first = record(generate()?, now)?;
                    keys = store.add_signing_key(first, true).await?;
                    tracing::info!("ssf: generated the first signing key");
                }
                key_set(&published(&keys, now, *grace), now, *ahead)
            }
        }
    }

    /// Re-reads the store (a key rotated by another process); keeps the
    /// keys it has when the store cannot be read.
    pub async fn refresh(&self, store: &dyn SignalStore) {
        if matches!(self.source, KeySource::File(_)) {
            return;
        }
        match Self::read(&self.source, store).await {
            Ok(set) => {
                let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
                if cur.signing.kid != set.signing.kid {
                    tracing::info!(kid = %set.signing.kid, "ssf: signing with a newer key");
                }
                *cur = Arc::new(set);
            }
            Err(e) => tracing::warn!(error = %e, "ssf: cannot refresh the signing keys"),
        }
    }

    fn set(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The public keys, as served at `jwks_uri`.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::to_value(&self.set().jwks).unwrap_or_else(|_| serde_json::json!({"keys": []}))
    }

    /// The id of the key that signs now.
    pub fn kid(&self) -> String {
        self.set().signing.kid.clone()
    }

    /// A compact JWS of `claims`: ES256, `typ: secevent+jwt`, `kid`.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String> {
        jose();
        let set = self.set();
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("secevent+jwt".into());
        header.kid = Some(set.signing.kid.clone());
        jsonwebtoken::encode(&header, claims, &set.signing.key)
            .map_err(|e| Error::Internal(format!("signing a SET: {e}")))
    }
}

/// `sessiond keys rotate`: adds a new key (it signs from the next refresh
/// of each replica on) and forgets keys retired longer than `grace` ago.
/// Returns the new key's id and the ids forgotten.
pub async fn rotate(store: &dyn SignalStore, grace: Duration) -> Result<(String, Vec<String>)> {
    let now = crate::sessions::now_millis();
    let new = record(generate()?, now)?;
    let kid = new.kid.clone();
    let keys = store.add_signing_key(new, false).await?;
    let gone = expired(&keys, now, grace);
    for old in &gone {
        store.delete_signing_key(old).await?;
    }
    Ok((kid, gone))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, at: Millis) -> SigningKeyRecord {
        SigningKeyRecord {
            kid: kid.into(),
            pkcs8: Vec::new(),
            created_at: at,
        }
    }

    #[test]
    fn a_retired_key_stays_published_for_the_grace_period_only() {
        let keys = [key("a", 0), key("b", 1_000), key("c", 5_000)];
        let grace = Duration::from_millis(2_000);
        let ids = |now| -> Vec<String> {
            published(&keys, now, grace)
                .iter()
                .map(|k| k.kid.clone())
                .collect()
        };
        assert_eq!(ids(2_500), ["a", "b", "c"]);
        assert_eq!(ids(3_500), ["b", "c"]);
        assert_eq!(ids(7_500), ["c"]);
        assert_eq!(expired(&keys, 7_500, grace), ["a", "b"]);
    }

    #[test]
    fn a_new_key_signs_only_once_published_long_enough() {
        let keys = [key("a", 0), key("b", 10_000)];
        let refs: Vec<&SigningKeyRecord> = keys.iter().collect();
        let ahead = Duration::from_millis(300);
        assert_eq!(signing_index(&refs, 10_100, ahead), 0, "b not cached yet");
        assert_eq!(signing_index(&refs, 10_300, ahead), 1);
        assert_eq!(
            signing_index(&refs[..1], 0, ahead),
            0,
            "a first key signs at once"
        );
        let states: Vec<&str> = describe(&keys, 10_100, Duration::from_secs(60), ahead)
            .into_iter()
            .map(|(_, _, s)| s)
            .collect();
        assert_eq!(states, ["signing", "next"]);
    }

    #[test]
    fn generated_keys_sign_and_never_print_their_secret() {
        let rec = record(generate().unwrap(), 0).unwrap();
        assert_eq!(rec.kid.len(), 43, "a base64url SHA-256 thumbprint");
        let set = key_set(&[&rec], 0, Duration::ZERO).unwrap();
        let printed = format!("{rec:?} {set:?}");
        assert!(!printed.contains("pkcs8: ["), "{printed}");
        let jwks = serde_json::to_value(&set.jwks).unwrap();
        let jwk = &jwks["keys"][0];
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["kid"], rec.kid.as_str());
        assert!(jwk.get("d").is_none(), "no private part in the JWKS");
    }

    #[test]
    fn a_file_that_is_not_a_pkcs8_key_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, "not a key").unwrap();
        let e = read_pem(&path).unwrap_err().to_string();
        assert!(e.contains("k.pem") && e.contains("PKCS#8"), "{e}");
    }
}
