//! Registration, sign-in, token refresh, sign-out, the caller's own account
//! and personal API keys.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::accounts::{self, registration_open};
use crate::api::UserView;
use crate::auth::{new_secret, token_hash, API_KEY_PREFIX};
use crate::client_addr::{bucket, client_address};
use crate::error::{ApiResult, AppError, Json, Path, Validator};
use crate::model::{new_id, ApiKey, User};
use crate::policy::Caller;
use crate::ratelimit::account_key;
use crate::sessions::{Issued, Sessions};
use crate::state::AppState;
use crate::time::{now, serde_millis, serde_millis_opt};

/// The client's address when the server knows it: the peer, or the client
/// a trusted proxy names (see [`crate::client_addr::client_address`]).
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientIp(peer.map(|peer| {
            client_address(peer, &parts.headers, &state.config.trusted_proxies)
        })))
    }
}

impl ClientIp {
    /// What the per-address limit counts under; requests whose peer is
    /// unknown (made in-process) share one bucket.
    fn bucket(&self) -> IpAddr {
        bucket(self.0.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
    }
}

/// The cookie that carries the refresh token for browsers.
pub const REFRESH_COOKIE: &str = "corral_refresh";
/// Browsers send the refresh cookie only to the sign-in routes.
const REFRESH_COOKIE_PATH: &str = "/api/auth";

/// What the refresh cookie depends on: whether the request came over TLS
/// (through a trusted proxy) and the refresh cookie it carries, if any.
pub struct RefreshCookie {
    secure: bool,
    token: Option<String>,
}

impl FromRequestParts<AppState> for RefreshCookie {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(RefreshCookie {
            secure: crate::layers::came_over_tls(&state.config, &parts.extensions, &parts.headers),
            token: cookie_value(&parts.headers, REFRESH_COOKIE),
        })
    }
}

impl RefreshCookie {
    /// `Set-Cookie` storing `token` for `max_age_secs`.
    fn set(&self, token: &str, max_age_secs: u64) -> HeaderValue {
        self.header(token, max_age_secs)
    }

    /// `Set-Cookie` removing the cookie.
    fn clear(&self) -> HeaderValue {
        self.header("", 0)
    }

    fn header(&self, value: &str, max_age_secs: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let cookie = format!(
            "{REFRESH_COOKIE}={value}; Path={REFRESH_COOKIE_PATH}; HttpOnly; SameSite=Strict; \
             Max-Age={max_age_secs}{secure}"
        );
        // Tokens are URL-safe base64, so the header is always valid.
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Adds the header that removes the cookie to `response`.
    fn clear_on(&self, mut response: Response) -> Response {
        response
            .headers_mut()
            .append(header::SET_COOKIE, self.clear());
        response
    }
}

/// The value of the first non-empty cookie called `name`.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key.trim() == name).then(|| value.trim().trim_matches('"').to_owned())
        })
        .find(|value| !value.is_empty())
}

/// Answers with tokens; with `cookie`, the refresh token goes into the
/// refresh cookie instead of the body.
fn token_answer(
    state: &AppState,
    status: StatusCode,
    mut tokens: TokenResponse,
    cookie: Option<&RefreshCookie>,
) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(cookie) = cookie {
        if let Some(token) = tokens.refresh_token.take() {
            let max_age = state.config.refresh_token_ttl_days.saturating_mul(86_400);
            headers.insert(header::SET_COOKIE, cookie.set(&token, max_age));
        }
    }
    (status, headers, axum::Json(tokens)).into_response()
}

/// Tokens handed out at sign-in and refresh.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// Short-lived JWT for `Authorization: Bearer …`.
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    pub expires_in: u64,
    /// Single-use token for `/api/auth/refresh`; each use returns a new one.
    /// Absent when the request asked for `refresh_cookie`: the token is then
    /// in the `corral_refresh` cookie (`HttpOnly`, `SameSite=Strict`,
    /// `Path=/api/auth`), out of page scripts' reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(with = "serde_millis")]
    pub refresh_expires_at: DateTime<Utc>,
    pub user: UserView,
}

impl From<Issued> for TokenResponse {
    fn from(issued: Issued) -> Self {
        TokenResponse {
            access_token: issued.access_token,
            token_type: "Bearer".into(),
            expires_in: issued.expires_in,
            refresh_token: Some(issued.refresh_token),
            refresh_expires_at: issued.refresh_expires_at,
            user: UserView::from(&issued.user),
        }
    }
}

/// The sign-in sessions, as this host's configuration sets them up.
fn sessions(state: &AppState) -> Sessions<'_> {
    Sessions {
        store: state.store.as_ref(),
        keys: &state.tokens,
        refresh_ttl_days: state.config.refresh_token_ttl_days,
    }
}

/// Issues an access token and a refresh token (in `family`, or a new one);
/// see [`Sessions::start`].
pub async fn issue_tokens(
    state: &AppState,
    user: &User,
    family: Option<String>,
) -> ApiResult<TokenResponse> {
    Ok(sessions(state).start(user, family).await?.into())
}

/// What the sign-in page may offer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuthOptions {
    /// Whether anyone may create an account at `/api/auth/register`.
    pub registration_open: bool,
}

/// How accounts come to be: whether self-registration is open.
#[utoipa::path(get, path = "/api/auth/options", tag = "auth",
    responses((status = 200, description = "Sign-in options", body = AuthOptions)))]
pub async fn options(State(state): State<AppState>) -> ApiResult<axum::Json<AuthOptions>> {
    Ok(axum::Json(AuthOptions {
        registration_open: registration_open(state.store.as_ref()).await?,
    }))
}

/// A new account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 3 to 32 letters, digits, `_`, `-` or `.`; stored lowercase.
    #[schema(
        example = "ada",
        min_length = 3,
        max_length = 32,
        pattern = r"^[A-Za-z0-9_.-]+$"
    )]
    pub username: String,
    #[schema(example = "correct horse battery", min_length = 8, max_length = 128)]
    pub password: String,
    /// Defaults to the username.
    #[schema(
        example = "Ada Lovelace",
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub display_name: Option<String>,
    /// Put the refresh token in the `corral_refresh` cookie (`HttpOnly`,
    /// `SameSite=Strict`, `Path=/api/auth`, `Secure` over HTTPS) instead of
    /// the body: what browsers use.
    #[serde(default)]
    pub refresh_cookie: bool,
}

/// Create an account (role `user`) and sign in.
#[utoipa::path(post, path = "/api/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created; signed in", body = TokenResponse),
        (status = 403, description = "Self-registration is closed", body = corral_sdk::ErrorBody),
        (status = 409, description = "The username is taken", body = corral_sdk::ErrorBody),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ip: ClientIp,
    cookie: RefreshCookie,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<Response> {
    throttle_address(&state, &ip)?;
    let user = accounts::register(
        state.store.as_ref(),
        &req.username,
        req.display_name.as_deref(),
        req.password,
    )
    .await?;
    let tokens = issue_tokens(&state, &user, None).await?;
    Ok(token_answer(
        &state,
        StatusCode::CREATED,
        tokens,
        req.refresh_cookie.then_some(&cookie),
    ))
}

fn throttle_address(state: &AppState, ip: &ClientIp) -> ApiResult<()> {
    state
        .limiter
        .attempt(ip.bucket())
        .map_err(|retry_after| AppError::RateLimited { retry_after })
}

/// Credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "ada")]
    pub username: String,
    #[schema(example = "correct horse battery")]
    pub password: String,
    /// Put the refresh token in the `corral_refresh` cookie (`HttpOnly`,
    /// `SameSite=Strict`, `Path=/api/auth`, `Secure` over HTTPS) instead of
    /// the body: what browsers use.
    #[serde(default)]
    pub refresh_cookie: bool,
}

/// Sign in with username and password.
///
/// Wrong passwords slow down later attempts on the same username, known
/// or not: each waits its turn, up to a few seconds after the one before,
/// before its password is checked. Attempts queued too far ahead, and many
/// attempts from one client address, are refused with 429.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "Wrong username or password, or the password changed while it was checked", body = corral_sdk::ErrorBody),
        (status = 403, description = "The account is disabled", body = corral_sdk::ErrorBody),
        (status = 429, description = "Too many attempts from this address or queued on this username, or too many passwords being checked at once; see `Retry-After`", body = corral_sdk::ErrorBody),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    cookie: RefreshCookie,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Response> {
    throttle_address(&state, &ip)?;
    let user = crate::sessions::authenticate(
        state.store.as_ref(),
        &state.limiter,
        &req.username,
        req.password,
    )
    .await?;
    state
        .limiter
        .refund(ip.bucket(), &account_key(&user.username));
    let tokens = sessions(&state).sign_in(user).await?.into();
    Ok(token_answer(
        &state,
        StatusCode::OK,
        tokens,
        req.refresh_cookie.then_some(&cookie),
    ))
}

/// A refresh token: in the body, or (left out) the `corral_refresh` cookie.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// Left out: the `corral_refresh` cookie is used, and the answer is in
    /// cookie mode (a new cookie, no `refresh_token` in the body). Send
    /// `{}` then; the body must still be JSON.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// Exchange a refresh token for new tokens. Each refresh token works once;
/// presenting a used one revokes every token of that sign-in.
///
/// With `{}` as the body, the `corral_refresh` cookie is the token: the
/// answer sets a new cookie and leaves `refresh_token` out of the body,
/// and a refusal (401 or 403) also removes the cookie; a passing fault
/// (503, 500) leaves it, so the browser can try again.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, description = "Invalid, expired, revoked or reused token, or none sent", body = corral_sdk::ErrorBody),
        (status = 403, description = "The account is disabled", body = corral_sdk::ErrorBody),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    cookie: RefreshCookie,
    Json(req): Json<RefreshRequest>,
) -> Response {
    let Some(token) = req.refresh_token else {
        let renewed = match cookie.token.as_deref() {
            Some(token) => renew(&state, token).await,
            None => Err(AppError::Unauthorized(
                "no refresh token: send one in the body or the `corral_refresh` cookie".into(),
            )),
        };
        return match renewed {
            Ok(tokens) => token_answer(&state, StatusCode::OK, tokens, Some(&cookie)),
            Err(err) => {
                let response = err.into_response();
                if refused(response.status()) {
                    cookie.clear_on(response)
                } else {
                    response
                }
            }
        };
    };
    match renew(&state, &token).await {
        Ok(tokens) => token_answer(&state, StatusCode::OK, tokens, None),
        Err(err) => err.into_response(),
    }
}

/// Whether a failed refresh means the refresh token is done for, rather
/// than a fault that may pass.
fn refused(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

/// New tokens for a refresh token, which is used up.
async fn renew(state: &AppState, refresh_token: &str) -> ApiResult<TokenResponse> {
    Ok(sessions(state).rotate(refresh_token).await?.into())
}

/// Sign out: revokes the refresh token and every token of its sign-in.
/// With `{}` as the body, the `corral_refresh` cookie is the token; the
/// answer always removes the cookie.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    request_body = RefreshRequest,
    responses((status = 204, description = "Signed out (also when the token was unknown or none was sent)")))]
pub async fn logout(
    State(state): State<AppState>,
    cookie: RefreshCookie,
    Json(req): Json<RefreshRequest>,
) -> Response {
    let token = req.refresh_token.or_else(|| cookie.token.clone());
    let revoked = match token {
        Some(token) => sessions(&state).end(&token).await,
        None => Ok(()),
    };
    cookie.clear_on(match revoked {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => err.into_response(),
    })
}

/// The signed-in account.
#[utoipa::path(get, path = "/api/me", tag = "me",
    responses((status = 200, description = "The caller's account", body = UserView)))]
pub async fn me(caller: Caller) -> Json<UserView> {
    Json(UserView::from(&caller.user))
}

/// Changes to the caller's own account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    #[schema(
        example = "Ada L.",
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub display_name: Option<String>,
}

/// Change the caller's display name.
#[utoipa::path(patch, path = "/api/me", tag = "me",
    request_body = UpdateMeRequest,
    responses((status = 200, description = "Updated account", body = UserView)))]
pub async fn update_me(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<UpdateMeRequest>,
) -> ApiResult<Json<UserView>> {
    let user = match req.display_name.as_deref() {
        Some(name) => accounts::rename_own(state.store.as_ref(), &caller.user, name).await?,
        None => caller.user,
    };
    Ok(Json(UserView::from(&user)))
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    #[schema(min_length = 8, max_length = 128)]
    pub new_password: String,
    /// Put the refresh token in the `corral_refresh` cookie (`HttpOnly`,
    /// `SameSite=Strict`, `Path=/api/auth`, `Secure` over HTTPS) instead of
    /// the body: what browsers use.
    #[serde(default)]
    pub refresh_cookie: bool,
}

/// Change the caller's password. Every other session, access token and
/// personal API key of the account stops working (whoever signed in with
/// the old password may have made them); the response carries fresh
/// tokens.
#[utoipa::path(post, path = "/api/me/password", tag = "me",
    request_body = ChangePasswordRequest,
    responses(
        (status = 200, description = "Password changed; new tokens", body = TokenResponse),
        (status = 403, description = "Called with an API key", body = corral_sdk::ErrorBody),
        (status = 409, description = "The account changed (a reset or disable) after the caller's token was issued; sign in again", body = corral_sdk::ErrorBody),
        (status = 422, description = "`current_password` is wrong, or `new_password` is too short or too long", body = corral_sdk::ErrorBody),
        (status = 429, description = "Wrong current passwords queued this account's next check too far ahead; see `Retry-After`", body = corral_sdk::ErrorBody),
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    cookie: RefreshCookie,
    Json(req): Json<ChangePasswordRequest>,
) -> ApiResult<Response> {
    // The answer is a sign-in: a key that could get one would outlive its
    // revocation.
    if caller.api_key_id.is_some() {
        return Err(AppError::Forbidden(
            "changing the password needs a sign-in, not an API key".into(),
        ));
    }
    // A wrong current password counts against the account as a wrong
    // sign-in does (the caller holds the account's token already).
    let user = accounts::change_own_password(
        state.store.as_ref(),
        &state.limiter,
        &caller.user,
        req.current_password,
        req.new_password,
    )
    .await?;
    let tokens = issue_tokens(&state, &user, None).await?;
    Ok(token_answer(
        &state,
        StatusCode::OK,
        tokens,
        req.refresh_cookie.then_some(&cookie),
    ))
}

/// A personal API key as listed (the key itself is shown only once).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    #[schema(example = "laptop scripts")]
    pub name: String,
    /// The key's first characters.
    #[schema(example = "crl_Xk3v9QaB")]
    pub prefix: String,
    #[serde(with = "serde_millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "serde_millis_opt")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(with = "serde_millis_opt")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<&ApiKey> for ApiKeyView {
    fn from(k: &ApiKey) -> Self {
        ApiKeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            expires_at: k.expires_at,
        }
    }
}

/// The caller's API keys, newest first.
#[utoipa::path(get, path = "/api/me/keys", tag = "me",
    responses((status = 200, description = "API keys", body = Vec<ApiKeyView>)))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ApiKeyView>>> {
    let keys = state.store.list_api_keys(caller.id()).await?;
    Ok(Json(keys.iter().map(ApiKeyView::from).collect()))
}

/// A new API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    #[schema(
        example = "laptop scripts",
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    /// Days until the key expires (1 to 3650); never when absent.
    #[schema(example = 90, minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<u32>,
}

/// A key just created: `key` is shown this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// Send as `Authorization: Bearer <key>`.
    pub key: String,
    #[serde(flatten)]
    pub info: ApiKeyView,
}

/// Create a personal API key.
#[utoipa::path(post, path = "/api/me/keys", tag = "me",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "The new key, shown once", body = CreatedKey),
        (status = 401, description = "The password changed, or was reset, while the key was made; sign in again", body = corral_sdk::ErrorBody),
        (status = 403, description = "Called with an API key: keys are made from a sign-in (or the account was disabled meanwhile)", body = corral_sdk::ErrorBody),
        (status = 409, description = "The account holds as many keys as it may (`limit_reached`)", body = corral_sdk::ErrorBody),
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let name = req.name.trim().to_owned();
    Validator::new()
        .check(
            (1..=64).contains(&name.chars().count()) && !name.chars().any(char::is_control),
            "name",
            "must be 1 to 64 characters, without control characters",
        )
        .check(
            req.expires_in_days.is_none_or(|d| (1..=3650).contains(&d)),
            "expires_in_days",
            "must be 1 to 3650",
        )
        .finish()?;
    let created_at = now();
    let expires_at = req
        .expires_in_days
        .map(|d| created_at + chrono::Duration::days(d as i64));
    // A key that could make keys would outlive its own revocation.
    if caller.api_key_id.is_some() {
        return Err(AppError::Forbidden(
            "API keys are made from a sign-in, not with another key, so that revoking a key \
             ends what it can do"
                .into(),
        ));
    }
    crate::limits::room_for_api_key(&state, caller.id()).await?;
    let key = new_secret(API_KEY_PREFIX);
    let record = ApiKey {
        id: new_id(),
        user_id: caller.id().to_owned(),
        name,
        prefix: key.chars().take(12).collect(),
        key_hash: token_hash(&key),
        created_at,
        last_used_at: None,
        expires_at,
    };
    state.store.create_api_key(&record).await?;
    accounts::keep_new_key(state.store.as_ref(), &caller.user, &record.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key,
            info: ApiKeyView::from(&record),
        }),
    ))
}

/// Revoke one of the caller's API keys. Called with an API key, only that
/// key itself.
#[utoipa::path(delete, path = "/api/me/keys/{id}", tag = "me",
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, description = "Called with an API key, for another key", body = corral_sdk::ErrorBody),
        (status = 404, description = "No such key", body = corral_sdk::ErrorBody),
    ))]
pub async fn delete_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if caller.api_key_id.as_ref().is_some_and(|own| *own != id) {
        return Err(AppError::Forbidden(
            "an API key can revoke only itself; sign in to manage the others".into(),
        ));
    }
    if state.store.delete_api_key(caller.id(), &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound("API key"))
    }
}

#[cfg(test)]
mod refresh_tests {
    use super::*;

    #[test]
    fn only_refusals_clear_the_cookie() {
        assert!(refused(StatusCode::UNAUTHORIZED));
        assert!(refused(StatusCode::FORBIDDEN));
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::GATEWAY_TIMEOUT,
        ] {
            assert!(!refused(status), "{status}");
        }
    }
}
