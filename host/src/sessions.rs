//! Sign-in sessions: checking credentials, and the refresh tokens that keep
//! a sign-in alive.
//!
//! A sign-in starts a family of refresh tokens. Each refresh uses up the
//! token presented and hands out its successor in the same family, so a
//! token works once. A used token presented again means two parties hold
//! it (one of them took a copy): the whole family is revoked and both have
//! to sign in again. Disabling an account, or a password reset or change,
//! revokes every family of the account.

use chrono::{DateTime, Utc};

use crate::accounts::MAX_USERNAME_CHARS;
use crate::auth::{
    hash_password, new_secret, token_hash, verify_password_async, TokenKeys, REFRESH_TOKEN_PREFIX,
};
use crate::error::{ApiResult, AppError};
use crate::model::{new_id, usage_kind, Session, User};
use crate::ratelimit::{account_key, SignInLimiter};
use crate::store::{Store, StoreError, UserUpdate};
use crate::time::now;

/// What issuing tokens needs: the store, the access-token keys and how
/// long a refresh token lasts.
#[derive(Clone, Copy)]
pub struct Sessions<'a> {
    pub store: &'a dyn Store,
    pub keys: &'a TokenKeys,
    pub refresh_ttl_days: u64,
}

/// Tokens handed out at sign-in and refresh, and the account they are for.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Short-lived JWT.
    pub access_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Single-use token to get the next pair.
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
    pub user: User,
}

impl Sessions<'_> {
    /// Issues an access token and a refresh token for `user` as read,
    /// continuing `family` or starting a new one.
    ///
    /// Refused when the account changed after it was read (its token
    /// version moved on or it was disabled): the session just stored is
    /// revoked again.
    pub async fn start(&self, user: &User, family: Option<String>) -> ApiResult<Issued> {
        let access_token = self.keys.issue(&user.id, user.token_version)?;
        let refresh_token = new_secret(REFRESH_TOKEN_PREFIX);
        let created_at = now();
        let expires_at = created_at + chrono::Duration::days(self.refresh_ttl_days as i64);
        let session = Session {
            id: new_id(),
            user_id: user.id.clone(),
            family_id: family.unwrap_or_else(new_id),
            token_hash: token_hash(&refresh_token),
            created_at,
            expires_at,
            used: false,
            revoked: false,
        };
        self.store.create_session(&session).await?;
        // A disable or reset writes the account first and revokes its
        // sessions after: either this read sees the write, or the revoke
        // comes after the session above was stored and takes it too.
        let current = self.store.get_user(&user.id).await?;
        let still_valid = current
            .as_ref()
            .is_some_and(|u| u.token_version == user.token_version && !u.disabled);
        if !still_valid {
            self.store.revoke_family(&session.family_id).await?;
            if current.is_some_and(|u| u.disabled) {
                return Err(AppError::AccountDisabled);
            }
            return Err(AppError::Unauthorized(
                "the account changed meanwhile; sign in again".into(),
            ));
        }
        Ok(Issued {
            access_token,
            expires_in: self.keys.ttl_secs,
            refresh_token,
            refresh_expires_at: expires_at,
            user: user.clone(),
        })
    }

    /// Signs in `user`, whose password was checked (see [`authenticate`]):
    /// refused when the account is disabled; otherwise records the sign-in
    /// and starts a new family of tokens.
    pub async fn sign_in(&self, user: User) -> ApiResult<Issued> {
        if user.disabled {
            return Err(AppError::AccountDisabled);
        }
        let changes = UserUpdate {
            last_login_at: Some(now()),
            // The password was checked against the hash as read: a change
            // or reset since then (the check may wait its turn for
            // seconds) must not sign in with the old password.
            expect_token_version: Some(user.token_version),
            ..Default::default()
        };
        let user = match self.store.update_user(&user.id, &changes).await {
            Ok(user) => user,
            Err(StoreError::Conflict(_) | StoreError::NotFound) => {
                return Err(AppError::Unauthorized(
                    "the account changed meanwhile; sign in again".into(),
                ))
            }
            Err(err) => return Err(err.into()),
        };
        if user.disabled {
            return Err(AppError::AccountDisabled);
        }
        crate::usage::record(self.store, &user.id, usage_kind::LOGIN).await;
        self.start(&user, None).await
    }

    /// Exchanges `refresh_token` for new tokens in its family; the token
    /// is used up.
    ///
    /// A token used before revokes its family. So does one presented for
    /// a disabled account (enabling it again must bring no sign-in back),
    /// or one that loses the race with another refresh of the same token.
    pub async fn rotate(&self, refresh_token: &str) -> ApiResult<Issued> {
        let invalid = || AppError::Unauthorized("the refresh token is invalid or expired".into());
        let session = self
            .store
            .get_session_by_hash(&token_hash(refresh_token))
            .await?
            .ok_or_else(invalid)?;
        if session.used {
            self.store.revoke_family(&session.family_id).await?;
            tracing::warn!(user = %session.user_id, "refresh token reused; sign-in revoked");
            return Err(AppError::Unauthorized(
                "this refresh token was already used; sign in again".into(),
            ));
        }
        if session.expires_at <= now() {
            return Err(invalid());
        }
        let user = self
            .store
            .get_user(&session.user_id)
            .await?
            .ok_or_else(invalid)?;
        // Disabling revoked the account's sessions, so that enabling it
        // again brings none back; this also catches a refresh that raced
        // the disable.
        if user.disabled {
            self.store.revoke_family(&session.family_id).await?;
            return Err(AppError::AccountDisabled);
        }
        if session.revoked {
            return Err(invalid());
        }
        if !self.store.mark_session_used(&session.id).await? {
            // Lost a race with another refresh of the same token: that is
            // reuse.
            self.store.revoke_family(&session.family_id).await?;
            return Err(invalid());
        }
        crate::usage::record(self.store, &user.id, usage_kind::REFRESH).await;
        let issued = self.start(&user, Some(session.family_id.clone())).await?;
        // A sign-out, or a reuse of a token of the family, may revoke it
        // while the successor is being stored, and miss the successor:
        // either this read sees that revocation, or it came after the
        // successor was stored and took it too.
        let revoked = self
            .store
            .get_session_by_hash(&session.token_hash)
            .await?
            .is_none_or(|s| s.revoked);
        if revoked {
            self.store.revoke_family(&session.family_id).await?;
            return Err(invalid());
        }
        Ok(issued)
    }

    /// Signs out: revokes the family of `refresh_token`. An unknown token
    /// is no error (there is nothing left to end).
    pub async fn end(&self, refresh_token: &str) -> ApiResult<()> {
        if let Some(session) = self
            .store
            .get_session_by_hash(&token_hash(refresh_token))
            .await?
        {
            self.store.revoke_family(&session.family_id).await?;
        }
        Ok(())
    }
}

/// The hash of a random password: unknown usernames are checked against
/// it so that they take as long to reject as known ones.
fn dummy_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&new_secret("")).unwrap_or_default())
        .clone()
}

/// The account `username` (any case) names, when `password` is its
/// password; the account may be disabled (see [`Sessions::sign_in`]).
///
/// Each attempt waits its turn on `limiter` under the name asked for,
/// known or not, so the wait is the same for both and does not tell which
/// accounts exist; a wrong password makes the next attempt wait longer.
pub async fn authenticate(
    store: &dyn Store,
    limiter: &SignInLimiter,
    username: &str,
    password: String,
) -> ApiResult<User> {
    let username = username.trim().to_lowercase();
    // A longer name cannot belong to an account; it is not looked up.
    let found = if (1..=MAX_USERNAME_CHARS).contains(&username.chars().count()) {
        store.get_user_by_username(&username).await?
    } else {
        None
    };
    let hash = found
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(dummy_hash);
    let password_ok = verify_in_turn(limiter, &username, hash, password).await?;
    match found {
        Some(user) if password_ok => Ok(user),
        _ => Err(AppError::Unauthorized("wrong username or password".into())),
    }
}

/// Whether `password` matches `hash`, checked in `username`'s turn on
/// `limiter` (see [`authenticate`]): a wrong one makes the next attempt on
/// the account wait longer, whichever route it comes through.
pub async fn verify_in_turn(
    limiter: &SignInLimiter,
    username: &str,
    hash: String,
    password: String,
) -> ApiResult<bool> {
    let account = account_key(username);
    let wait = limiter
        .reserve(&account)
        .map_err(|retry_after| AppError::RateLimited { retry_after })?;
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let ok = verify_password_async(hash, password).await?;
    if ok {
        limiter.succeeded(&account);
    } else {
        limiter.failed(&account);
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use corral_sdk::Role;

    use super::*;
    use crate::accounts::testing;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"0123456789abcdef0123456789abcdef", 900)
    }

    fn sessions<'a>(store: &'a dyn Store, keys: &'a TokenKeys) -> Sessions<'a> {
        Sessions {
            store,
            keys,
            refresh_ttl_days: 30,
        }
    }

    /// Stores `uma`, a user whose password is `password`.
    async fn with_password(store: &dyn Store, password: &str) -> User {
        let mut user = testing::user("uma", Role::User);
        user.password_hash = hash_password(password).unwrap();
        store.create_user(&user).await.unwrap();
        user
    }

    fn message(err: &AppError) -> (u16, &'static str, String) {
        (err.status().as_u16(), err.code(), err.to_string())
    }

    #[tokio::test]
    async fn each_refresh_token_works_once_and_reuse_ends_the_sign_in() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let keys = keys();
        let sessions = sessions(store, &keys);
        let user = testing::insert(store, "uma", Role::User).await;
        let first = sessions.start(&user, None).await.unwrap();
        assert_eq!(keys.verify(&first.access_token).unwrap().sub, user.id);
        assert!(first.refresh_token.starts_with(REFRESH_TOKEN_PREFIX));

        let second = sessions.rotate(&first.refresh_token).await.unwrap();
        assert_ne!(second.refresh_token, first.refresh_token);
        assert_eq!(second.user.id, user.id);
        let stored = |token: &str| {
            let hash = token_hash(token);
            async move { store.get_session_by_hash(&hash).await.unwrap().unwrap() }
        };
        let (a, b) = (
            stored(&first.refresh_token).await,
            stored(&second.refresh_token).await,
        );
        assert_eq!(a.family_id, b.family_id, "a refresh continues the sign-in");
        assert!(a.used && !b.used);

        // The first token again: someone holds a copy.
        let err = sessions.rotate(&first.refresh_token).await.unwrap_err();
        assert_eq!(
            message(&err),
            (
                401,
                "unauthorized",
                "this refresh token was already used; sign in again".into()
            )
        );
        // ...so the token handed out after it no longer works either.
        let err = sessions.rotate(&second.refresh_token).await.unwrap_err();
        assert_eq!(err.to_string(), "the refresh token is invalid or expired");
        assert!(stored(&second.refresh_token).await.revoked);

        let err = sessions.rotate("crt_never-issued").await.unwrap_err();
        assert_eq!(err.code(), "unauthorized");
    }

    #[tokio::test]
    async fn an_expired_refresh_token_is_refused() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let keys = keys();
        let user = testing::insert(store, "uma", Role::User).await;
        let token = new_secret(REFRESH_TOKEN_PREFIX);
        let created_at = now() - chrono::Duration::days(31);
        let session = Session {
            id: new_id(),
            user_id: user.id.clone(),
            family_id: new_id(),
            token_hash: token_hash(&token),
            created_at,
            expires_at: created_at + chrono::Duration::days(30),
            used: false,
            revoked: false,
        };
        store.create_session(&session).await.unwrap();
        let err = sessions(store, &keys).rotate(&token).await.unwrap_err();
        assert_eq!(err.to_string(), "the refresh token is invalid or expired");
    }

    #[tokio::test]
    async fn a_disabled_account_loses_its_sign_ins_for_good() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let keys = keys();
        let sessions = sessions(store, &keys);
        let user = testing::insert(store, "uma", Role::User).await;
        let issued = sessions.start(&user, None).await.unwrap();
        let disabled = |on: bool| UserUpdate {
            disabled: Some(on),
            ..Default::default()
        };
        store.update_user(&user.id, &disabled(true)).await.unwrap();
        let err = sessions.rotate(&issued.refresh_token).await.unwrap_err();
        assert!(matches!(err, AppError::AccountDisabled), "{err:?}");

        store.update_user(&user.id, &disabled(false)).await.unwrap();
        let err = sessions.rotate(&issued.refresh_token).await.unwrap_err();
        assert_eq!(err.code(), "unauthorized");
    }

    #[tokio::test]
    async fn tokens_are_refused_for_an_account_changed_since_it_was_read() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let keys = keys();
        let sessions = sessions(store, &keys);
        let user = testing::insert(store, "uma", Role::User).await;
        let reset = UserUpdate {
            bump_token_version: true,
            ..Default::default()
        };
        store.update_user(&user.id, &reset).await.unwrap();
        let err = sessions.start(&user, None).await.unwrap_err();
        assert_eq!(
            message(&err),
            (
                401,
                "unauthorized",
                "the account changed meanwhile; sign in again".into()
            )
        );
        let current = store.get_user(&user.id).await.unwrap().unwrap();
        sessions.start(&current, None).await.unwrap();
    }

    #[tokio::test]
    async fn signing_out_ends_the_whole_sign_in() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let keys = keys();
        let sessions = sessions(store, &keys);
        let user = testing::insert(store, "uma", Role::User).await;
        let first = sessions.start(&user, None).await.unwrap();
        let second = sessions.rotate(&first.refresh_token).await.unwrap();
        let other = sessions.start(&user, None).await.unwrap();
        // Signing out with an older token of the sign-in ends it too.
        sessions.end(&first.refresh_token).await.unwrap();
        let err = sessions.rotate(&second.refresh_token).await.unwrap_err();
        assert_eq!(err.code(), "unauthorized");
        // Another sign-in of the same account goes on.
        sessions.rotate(&other.refresh_token).await.unwrap();
        sessions.end("crt_never-issued").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refresh_racing_a_sign_out_leaves_nothing_signed_in() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let keys = keys();
        let sessions = sessions(store, &keys);
        let user = testing::insert(store, "uma", Role::User).await;
        for _ in 0..40 {
            let first = sessions.start(&user, None).await.unwrap();
            let (refreshed, ended) = tokio::join!(
                sessions.rotate(&first.refresh_token),
                sessions.end(&first.refresh_token)
            );
            ended.unwrap();
            // The sign-out is done: whatever the refresh handed out is dead.
            if let Ok(next) = refreshed {
                let err = sessions.rotate(&next.refresh_token).await.unwrap_err();
                assert_eq!(err.code(), "unauthorized");
            }
        }
    }

    #[tokio::test]
    async fn sign_in_checks_the_password_and_the_account() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let keys = keys();
        let limiter = SignInLimiter::default();
        let user = with_password(store, "correct horse").await;

        let wrong = "wrong username or password".to_owned();
        let err = authenticate(store, &limiter, "uma", "wrong horse".into())
            .await
            .unwrap_err();
        assert_eq!(message(&err), (401, "unauthorized", wrong.clone()));
        let err = authenticate(store, &limiter, "nobody", "correct horse".into())
            .await
            .unwrap_err();
        assert_eq!(message(&err), (401, "unauthorized", wrong));

        let found = authenticate(store, &limiter, " UMA ", "correct horse".into())
            .await
            .unwrap();
        assert_eq!(found.id, user.id);
        let issued = sessions(store, &keys).sign_in(found).await.unwrap();
        assert!(issued.user.last_login_at.is_some());

        let disable = UserUpdate {
            disabled: Some(true),
            ..Default::default()
        };
        store.update_user(&user.id, &disable).await.unwrap();
        let found = authenticate(store, &limiter, "uma", "correct horse".into())
            .await
            .unwrap();
        let err = sessions(store, &keys).sign_in(found).await.unwrap_err();
        assert!(matches!(err, AppError::AccountDisabled), "{err:?}");
    }

    #[tokio::test]
    async fn a_password_checked_before_a_change_signs_nobody_in() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let keys = keys();
        let limiter = SignInLimiter::default();
        let user = with_password(store, "correct horse").await;
        let found = authenticate(store, &limiter, "uma", "correct horse".into())
            .await
            .unwrap();
        // The password changes (or staff reset it) while that sign-in
        // waits for its tokens.
        let changed = UserUpdate {
            password_hash: Some(hash_password("battery staple").unwrap()),
            bump_token_version: true,
            ..Default::default()
        };
        store.update_user(&user.id, &changed).await.unwrap();
        let err = sessions(store, &keys).sign_in(found).await.unwrap_err();
        assert_eq!(
            message(&err),
            (
                401,
                "unauthorized",
                "the account changed meanwhile; sign in again".into()
            )
        );
        let stored = store.get_user(&user.id).await.unwrap().unwrap();
        assert!(stored.last_login_at.is_none(), "nothing was recorded");
        let found = authenticate(store, &limiter, "uma", "battery staple".into())
            .await
            .unwrap();
        sessions(store, &keys).sign_in(found).await.unwrap();
    }
}
