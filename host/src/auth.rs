//! Credentials: password hashing, access tokens (JWT), refresh tokens and
//! API keys.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::error::AppError;

/// Prefix of personal API keys, so they are recognisable (and scannable)
/// in logs or leaked files.
pub const API_KEY_PREFIX: &str = "crl_";
/// Prefix of refresh tokens.
pub const REFRESH_TOKEN_PREFIX: &str = "crt_";

/// Hashes a password with argon2id and a random salt. Slow on purpose:
/// call it off the async workers.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// Whether `password` matches the stored argon2 hash.
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Password hashes computed at once, at most: argon2 takes tens of
/// megabytes and a core's worth of time each, so an unbounded flood of
/// sign-ins would exhaust memory and starve every other request.
fn hashing_permits() -> &'static Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(Semaphore::new(2 * cores))
    })
}

/// How long a password check waits for a hashing permit before it is
/// refused as busy.
pub const HASHING_WAIT: Duration = Duration::from_secs(5);

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    /// Every hashing permit stayed taken for [`HASHING_WAIT`].
    #[error("the server is busy checking passwords; try again in a moment")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<HashingError> for AppError {
    fn from(err: HashingError) -> Self {
        match err {
            HashingError::Busy => AppError::Busy {
                retry_after: 1,
                message: err.to_string(),
            },
            HashingError::Failed(e) => AppError::Internal(e),
        }
    }
}

/// Runs `work` on the blocking pool once a hashing permit is free.
async fn with_permit<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HashingError> {
    bounded(hashing_permits(), HASHING_WAIT, work).await
}

/// Runs `work` on the blocking pool holding one of `permits`, waiting at
/// most `wait` for it.
async fn bounded<T: Send + 'static>(
    permits: &Arc<Semaphore>,
    wait: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HashingError> {
    let permit = tokio::time::timeout(wait, permits.clone().acquire_owned())
        .await
        .map_err(|_| HashingError::Busy)?
        .map_err(|e| anyhow::anyhow!("hashing permits closed: {e}"))?;
    let out = tokio::task::spawn_blocking(move || {
        let out = work();
        drop(permit);
        out
    })
    .await
    .map_err(|e| anyhow::anyhow!("password hashing task failed: {e}"))?;
    Ok(out)
}

/// Runs argon2 on the blocking pool, within the hashing bound.
pub async fn hash_password_async(password: String) -> Result<String, HashingError> {
    Ok(with_permit(move || hash_password(&password)).await??)
}

/// Runs argon2 verification on the blocking pool, within the hashing
/// bound.
pub async fn verify_password_async(hash: String, password: String) -> Result<bool, HashingError> {
    with_permit(move || verify_password(&hash, &password)).await
}

/// A fresh secret with the given prefix: 32 random bytes, base64url.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// sha256 of a token, hex: how refresh tokens and API keys are stored.
/// (They are long random strings, so a fast hash is enough.)
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// The user's `token_version` when the token was issued.
    pub ver: i64,
    pub iat: i64,
    pub exp: i64,
}

/// Signs and checks access tokens (HS256).
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Access token lifetime in seconds.
    pub ttl_secs: u64,
}

impl TokenKeys {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_secs,
        }
    }

    /// An access token for the user at their current token version.
    pub fn issue(&self, user_id: &str, token_version: i64) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_owned(),
            ver: token_version,
            iat: now,
            exp: now + self.ttl_secs as i64,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The claims of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()
            .map(|data| data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct hors"));
        assert!(!verify_password("not a hash", "correct horse"));
    }

    #[tokio::test]
    async fn hashing_past_the_bound_waits_then_is_refused_as_busy() {
        let permits = Arc::new(Semaphore::new(1));
        let wait = Duration::from_millis(50);
        assert_eq!(bounded(&permits, wait, || 7).await.unwrap(), 7);
        let held = permits.clone().acquire_owned().await.unwrap();
        let err = bounded(&permits, wait, || 7).await.unwrap_err();
        assert!(matches!(err, HashingError::Busy), "{err:?}");
        let err = AppError::from(err);
        assert_eq!((err.status().as_u16(), err.code()), (429, "busy"));
        drop(held);
        assert_eq!(bounded(&permits, wait, || 8).await.unwrap(), 8);
    }

    #[test]
    fn tokens_round_trip_and_reject_other_keys() {
        let keys = TokenKeys::new(b"0123456789abcdef0123456789abcdef", 60);
        let token = keys.issue("u1", 3).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.ver), ("u1", 3));
        let other = TokenKeys::new(b"another secret, 32 bytes long!!!", 60);
        assert!(other.verify(&token).is_none());
        assert!(keys.verify("garbage").is_none());
    }

    #[test]
    fn secrets_are_distinct_and_hash_stably() {
        let a = new_secret(API_KEY_PREFIX);
        let b = new_secret(API_KEY_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("crl_") && a.len() > 40);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_eq!(token_hash(&a).len(), 64);
    }
}
