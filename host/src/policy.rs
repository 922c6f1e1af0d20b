//! Who may call what. Every route is registered with an [`Access`] rule
//! (see [`crate::api::routes`]: a route cannot be built without one) and
//! [`enforce`] is the one place that checks it, on every request.
//!
//! The caller's account is read from the store on each request, so a
//! disabled account, a changed role or a reset password takes effect at
//! once, whatever tokens the user still holds.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use corral_sdk::Role;

use crate::auth::{token_hash, API_KEY_PREFIX};
use crate::error::AppError;
use crate::model::User;
use crate::state::AppState;
use crate::store::Store;

/// The rule of one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in account.
    Signed,
    /// Admins and technicians.
    Staff,
    /// Technicians only.
    Technician,
}

impl Access {
    /// Whether an account with `role` passes this rule.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Public | Access::Signed => true,
            Access::Staff => role.is_staff(),
            Access::Technician => role == Role::Technician,
        }
    }

    pub fn needs_sign_in(self) -> bool {
        self != Access::Public
    }
}

/// The signed-in account making a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    /// Authenticated with a personal API key rather than a session.
    pub api_key_id: Option<String>,
    /// What the request was authenticated with, for connections that
    /// outlive it (see [`recheck`]).
    pub credential: Credential,
}

/// What a caller signed in with (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An access token: the account's token version it was issued at, and
    /// its expiry (seconds since the epoch).
    AccessToken { version: i64, expires_at: i64 },
    /// A personal API key, by the hash it is stored under.
    ApiKey {
        key_hash: String,
        expires_at: Option<DateTime<Utc>>,
    },
}

impl Caller {
    pub fn id(&self) -> &str {
        &self.user.id
    }

    pub fn is_staff(&self) -> bool {
        self.user.is_staff()
    }

    /// When the credential stops working by itself, if ever.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        match &self.credential {
            Credential::AccessToken { expires_at, .. } => {
                DateTime::from_timestamp(*expires_at, 0).or(Some(DateTime::<Utc>::MIN_UTC))
            }
            Credential::ApiKey { expires_at, .. } => *expires_at,
        }
    }
}

/// How often a long-lived connection checks its credential again.
pub const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The time left until `at`; `None` is never.
pub fn until(at: Option<DateTime<Utc>>) -> std::time::Duration {
    const NEVER: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);
    at.map_or(NEVER, |at| {
        (at - crate::time::now())
            .to_std()
            .unwrap_or(std::time::Duration::ZERO)
    })
}

/// Whether a failed credential check means a connection's access is over
/// (a store error is not).
pub fn ends_access(err: &AppError) -> bool {
    matches!(err, AppError::Unauthorized(_) | AppError::AccountDisabled)
}

/// Resolves once `caller` may no longer hold a stream that needs `access`:
/// the credential expired or was revoked, or the account was disabled or
/// lost the role (checked every [`RECHECK_EVERY`]). A store that does not
/// answer ends nothing.
pub async fn access_lost(store: Arc<dyn Store>, caller: Caller, access: Access) {
    let expiry = tokio::time::sleep(until(caller.expires_at()));
    tokio::pin!(expiry);
    let mut every =
        tokio::time::interval_at(tokio::time::Instant::now() + RECHECK_EVERY, RECHECK_EVERY);
    loop {
        tokio::select! {
            () = &mut expiry => return,
            _ = every.tick() => match recheck(store.as_ref(), &caller).await {
                Ok(user) if access.allows(user.role) => {}
                Ok(_) => return,
                Err(err) if ends_access(&err) => return,
                Err(_) => {}
            },
        }
    }
}

/// Checks again that `caller`'s credential holds, for a connection that
/// outlives the request that opened it (a WebSocket): the access token has
/// not expired and was issued at the account's current token version (a
/// password change or reset, or disabling the account, bumps it), or the
/// API key still exists; and the account exists and is enabled. Returns
/// the account as stored now.
pub async fn recheck(store: &dyn Store, caller: &Caller) -> Result<User, AppError> {
    let now = crate::time::now();
    if caller.expires_at().is_some_and(|t| t <= now) {
        return Err(AppError::Unauthorized(
            "the access token expired; sign in again".into(),
        ));
    }
    if let Credential::ApiKey { key_hash, .. } = &caller.credential {
        let key = store.get_api_key_by_hash(key_hash).await?;
        if key.is_none_or(|k| k.user_id != caller.user.id) {
            return Err(AppError::Unauthorized("the API key was revoked".into()));
        }
    }
    let user = store
        .get_user(caller.id())
        .await?
        .ok_or_else(|| AppError::Unauthorized("the account no longer exists".into()))?;
    if user.disabled {
        return Err(AppError::AccountDisabled);
    }
    if let Credential::AccessToken { version, .. } = caller.credential {
        if version != user.token_version {
            return Err(AppError::Unauthorized(
                "the password was changed or reset, or the account disabled; sign in again".into(),
            ));
        }
    }
    Ok(user)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| AppError::Unauthorized("sign in first".into()))
    }
}

/// Middleware applied to each route with its rule.
pub async fn enforce(
    State((state, access)): State<(AppState, Access)>,
    mut request: Request,
    next: Next,
) -> Response {
    if access.needs_sign_in() {
        let token = bearer(request.headers())
            .map(str::to_owned)
            .or_else(|| websocket_token(&request));
        match authorize(&state, access, token.as_deref()).await {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
            }
            // OpenAI clients expect their own error shape.
            Err(err) if request.uri().path().starts_with("/v1/") => {
                return crate::error::openai::openai_error_response(err)
            }
            Err(err) => return err.into_response(),
        }
    }
    next.run(request).await
}

/// The subprotocol a browser offers, before its access token, to sign a
/// WebSocket handshake in ([`websocket_token`]); the server answers with it.
pub const BEARER_PROTOCOL: &str = "corral.bearer";

/// The token of a WebSocket handshake, which browsers cannot put in a
/// header of their own: offered as the subprotocol after
/// [`BEARER_PROTOCOL`] (`Sec-WebSocket-Protocol: corral.bearer, <token>`),
/// which stays out of URLs and so of proxies' logs, or else the
/// `access_token` query parameter. Other requests must use the
/// `Authorization` header.
fn websocket_token(request: &Request) -> Option<String> {
    let upgrade = request.headers().get(header::UPGRADE)?.to_str().ok()?;
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return None;
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if let Some(at) = offered.iter().position(|p| *p == BEARER_PROTOCOL) {
        return offered
            .get(at + 1)
            .filter(|t| !t.is_empty())
            .map(|t| (*t).to_owned());
    }
    let axum::extract::Query(mut query) = axum::extract::Query::<
        std::collections::HashMap<String, String>,
    >::try_from_uri(request.uri())
    .ok()?;
    query.remove("access_token").filter(|t| !t.is_empty())
}

async fn authorize(
    state: &AppState,
    access: Access,
    token: Option<&str>,
) -> Result<Caller, AppError> {
    let token = token.ok_or_else(|| {
        AppError::Unauthorized("sign in: send `Authorization: Bearer <token>`".into())
    })?;
    let caller = resolve(state, token).await?;
    if caller.user.disabled {
        return Err(AppError::AccountDisabled);
    }
    if !access.allows(caller.user.role) {
        return Err(AppError::Forbidden(match access {
            Access::Technician => "this needs the technician role".into(),
            _ => "this needs the admin or technician role".into(),
        }));
    }
    Ok(caller)
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The account behind an access token or API key.
pub async fn resolve(state: &AppState, token: &str) -> Result<Caller, AppError> {
    let invalid = || AppError::Unauthorized("the token is invalid or expired".into());
    if token.starts_with(API_KEY_PREFIX) {
        let key = state
            .store
            .get_api_key_by_hash(&token_hash(token))
            .await?
            .ok_or_else(invalid)?;
        let now = crate::time::now();
        if key.expires_at.is_some_and(|t| t <= now) {
            return Err(invalid());
        }
        let user = state
            .store
            .get_user(&key.user_id)
            .await?
            .ok_or_else(invalid)?;
        // Refreshing `last_used_at` at most once a minute keeps writes off
        // the hot path of busy API clients.
        if key
            .last_used_at
            .is_none_or(|t| (now - t).num_seconds() >= 60)
        {
            state.store.touch_api_key(&key.id, now).await?;
        }
        return Ok(Caller {
            user,
            api_key_id: Some(key.id),
            credential: Credential::ApiKey {
                key_hash: key.key_hash,
                expires_at: key.expires_at,
            },
        });
    }
    let claims = state.tokens.verify(token).ok_or_else(invalid)?;
    let user = state
        .store
        .get_user(&claims.sub)
        .await?
        .ok_or_else(invalid)?;
    if user.token_version != claims.ver {
        // Disabling bumps the version too; say why the token stopped.
        return Err(if user.disabled {
            AppError::AccountDisabled
        } else {
            invalid()
        });
    }
    Ok(Caller {
        user,
        api_key_id: None,
        credential: Credential::AccessToken {
            version: claims.ver,
            expires_at: claims.exp,
        },
    })
}
