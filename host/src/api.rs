//! The REST API: the route table (each route with its access rule), the
//! router built from it, and types several handlers share.

use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::{self, MethodRouter};
use axum::Router;
use chrono::{DateTime, Utc};
use corral_sdk::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiResult, Validator};
use crate::model::User;
use crate::policy::{Access, Caller};
use crate::state::AppState;
use crate::time::{serde_millis, serde_millis_opt};

pub mod admin;
pub mod auth;
pub mod chat_stream;
pub mod chats;
pub mod health;
pub mod models;
pub mod nodes;
pub mod openai;
pub mod plugins;
pub mod runtime;
pub mod stats;
pub mod tickets;
pub mod users;

/// One route: method, path (OpenAPI syntax, which axum shares), rule and
/// handler.
pub struct ApiRoute {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub handler: MethodRouter<AppState>,
}

fn route(
    method: Method,
    path: &'static str,
    access: Access,
    handler: MethodRouter<AppState>,
) -> ApiRoute {
    ApiRoute {
        method,
        path,
        access,
        handler,
    }
}

/// Every API route. The OpenAPI document must list exactly these (checked
/// at start and by a test).
pub fn routes() -> Vec<ApiRoute> {
    use routing::{delete, get, patch, post, put};
    use Access::*;
    use Method as M;
    vec![
        route(M::GET, "/healthz", Public, get(health::healthz)),
        route(M::GET, "/readyz", Public, get(health::readyz)),
        // Accounts and sessions.
        route(M::POST, "/api/auth/register", Public, post(auth::register)),
        route(M::POST, "/api/auth/login", Public, post(auth::login)),
        route(M::POST, "/api/auth/refresh", Public, post(auth::refresh)),
        route(M::POST, "/api/auth/logout", Public, post(auth::logout)),
        route(M::GET, "/api/auth/options", Public, get(auth::options)),
        route(M::GET, "/api/me", Signed, get(auth::me)),
        route(M::PATCH, "/api/me", Signed, patch(auth::update_me)),
        route(
            M::POST,
            "/api/me/password",
            Signed,
            post(auth::change_password),
        ),
        route(M::GET, "/api/me/keys", Signed, get(auth::list_keys)),
        route(M::POST, "/api/me/keys", Signed, post(auth::create_key)),
        route(
            M::DELETE,
            "/api/me/keys/{id}",
            Signed,
            delete(auth::delete_key),
        ),
        route(M::GET, "/api/me/stats", Signed, get(stats::mine)),
        route(M::GET, "/api/me/quota", Signed, get(crate::quota::my_quota)),
        // User management.
        route(M::GET, "/api/users", Staff, get(users::list)),
        route(M::POST, "/api/users", Staff, post(users::create)),
        route(M::GET, "/api/users/{id}", Staff, get(users::get_one)),
        route(M::PATCH, "/api/users/{id}", Staff, patch(users::update)),
        route(
            M::POST,
            "/api/users/{id}/password",
            Staff,
            post(users::reset_password),
        ),
        route(M::GET, "/api/audit", Staff, get(admin::audit)),
        route(M::GET, "/api/settings", Staff, get(admin::get_settings)),
        route(
            M::PATCH,
            "/api/settings",
            Staff,
            patch(admin::update_settings),
        ),
        route(M::GET, "/api/quotas", Staff, get(crate::quota::get_quotas)),
        route(M::PUT, "/api/quotas", Staff, put(crate::quota::put_quotas)),
        route(M::GET, "/api/stats", Staff, get(stats::platform)),
        // Chats.
        route(M::GET, "/api/chats", Signed, get(chats::list)),
        route(M::POST, "/api/chats", Signed, post(chats::create)),
        route(M::GET, "/api/chats/{id}", Signed, get(chats::get_one)),
        route(M::PATCH, "/api/chats/{id}", Signed, patch(chats::update)),
        route(M::DELETE, "/api/chats/{id}", Signed, delete(chats::remove)),
        route(M::GET, "/api/chats/{id}/export", Signed, get(chats::export)),
        route(
            M::POST,
            "/api/chats/{id}/messages",
            Signed,
            post(chats::add_message),
        ),
        route(
            M::POST,
            "/api/chats/{id}/stream",
            Signed,
            post(chat_stream::stream),
        ),
        route(
            M::POST,
            "/api/chats/{id}/regenerate",
            Signed,
            post(chat_stream::regenerate),
        ),
        route(
            M::POST,
            "/api/chats/{id}/stop",
            Signed,
            post(chat_stream::stop),
        ),
        route(M::GET, "/api/chats/ws", Signed, get(chat_stream::websocket)),
        // OpenAI-compatible API.
        route(M::GET, "/v1/models", Signed, get(openai::models)),
        route(
            M::POST,
            "/v1/chat/completions",
            Signed,
            post(openai::chat_completions),
        ),
        route(
            M::POST,
            "/v1/completions",
            Signed,
            post(openai::completions),
        ),
        route(M::POST, "/v1/embeddings", Signed, post(openai::embeddings)),
        // Models.
        route(M::GET, "/api/models", Signed, get(models::list)),
        route(M::POST, "/api/models", Technician, post(models::create)),
        route(M::GET, "/api/models/{id}", Signed, get(models::get_one)),
        route(
            M::PATCH,
            "/api/models/{id}",
            Technician,
            patch(models::update),
        ),
        route(
            M::DELETE,
            "/api/models/{id}",
            Technician,
            delete(models::remove),
        ),
        route(
            M::GET,
            "/api/models/{id}/progress",
            Technician,
            get(models::progress),
        ),
        route(M::GET, "/api/events", Technician, get(models::events)),
        // The inference runtime.
        route(
            M::POST,
            "/api/models/{id}/load",
            Technician,
            post(runtime::load),
        ),
        route(
            M::POST,
            "/api/models/{id}/unload",
            Technician,
            post(runtime::unload),
        ),
        route(M::GET, "/api/status", Technician, get(runtime::status)),
        route(M::GET, "/api/nodes", Technician, get(nodes::list)),
        route(M::POST, "/api/nodes", Technician, post(nodes::create)),
        route(
            M::PATCH,
            "/api/nodes/{name}",
            Technician,
            patch(nodes::update),
        ),
        route(
            M::DELETE,
            "/api/nodes/{name}",
            Technician,
            delete(nodes::remove),
        ),
        route(M::GET, "/metrics", Staff, get(runtime::metrics)),
        // Tickets.
        route(M::GET, "/api/plugins", Technician, get(plugins::list)),
        route(
            M::POST,
            "/api/plugins",
            Technician,
            post(plugins::install).layer(DefaultBodyLimit::max(plugins::MAX_UPLOAD_BYTES)),
        ),
        route(
            M::GET,
            "/api/plugins/{id}",
            Technician,
            get(plugins::get_one),
        ),
        route(
            M::PATCH,
            "/api/plugins/{id}",
            Technician,
            patch(plugins::update),
        ),
        route(
            M::DELETE,
            "/api/plugins/{id}",
            Technician,
            delete(plugins::remove),
        ),
        route(
            M::PUT,
            "/api/plugins/{id}/component",
            Technician,
            put(plugins::upgrade).layer(DefaultBodyLimit::max(plugins::MAX_UPLOAD_BYTES)),
        ),
        route(
            M::PUT,
            "/api/plugins/{id}/config",
            Technician,
            put(plugins::configure),
        ),
        route(
            M::GET,
            "/api/plugins/{id}/{*path}",
            Signed,
            get(plugins::route_get),
        ),
        route(
            M::POST,
            "/api/plugins/{id}/{*path}",
            Signed,
            post(plugins::route_post),
        ),
        route(
            M::PUT,
            "/api/plugins/{id}/{*path}",
            Signed,
            put(plugins::route_put),
        ),
        route(
            M::PATCH,
            "/api/plugins/{id}/{*path}",
            Signed,
            patch(plugins::route_patch),
        ),
        route(
            M::DELETE,
            "/api/plugins/{id}/{*path}",
            Signed,
            delete(plugins::route_delete),
        ),
        route(M::GET, "/api/me/plugins", Signed, get(plugins::mine)),
        route(M::PUT, "/api/me/plugins/{id}", Signed, put(plugins::choose)),
        route(M::GET, "/api/tickets", Signed, get(tickets::list)),
        route(M::POST, "/api/tickets", Signed, post(tickets::create)),
        route(M::GET, "/api/tickets/{id}", Signed, get(tickets::get_one)),
        route(
            M::PATCH,
            "/api/tickets/{id}",
            Signed,
            patch(tickets::update),
        ),
        route(
            M::POST,
            "/api/tickets/{id}/comments",
            Signed,
            post(tickets::comment),
        ),
    ]
}

/// The API router: every route wrapped in its access rule.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for r in routes() {
        let layer =
            axum::middleware::from_fn_with_state((state.clone(), r.access), crate::policy::enforce);
        router = router.route(r.path, r.handler.route_layer(layer));
    }
    router.with_state(state)
}

/// An account as the API shows it (no password hash).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: String,
    #[schema(example = "ada")]
    pub username: String,
    #[schema(example = "Ada Lovelace")]
    pub display_name: String,
    pub role: Role,
    pub disabled: bool,
    #[serde(with = "serde_millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "serde_millis_opt")]
    pub last_login_at: Option<DateTime<Utc>>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.clone(),
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            role: u.role,
            disabled: u.disabled,
            created_at: u.created_at,
            last_login_at: u.last_login_at,
        }
    }
}

/// A page of results.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paged<T: ToSchema> {
    pub items: Vec<T>,
    /// All matches, not only this page.
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

/// The largest page and offset a list accepts.
pub const MAX_LIMIT: u32 = 200;
pub const MAX_OFFSET: u64 = 1_000_000_000;

/// Checks paging values, returning `(limit, offset)`.
pub fn paging(limit: Option<u32>, offset: Option<u64>) -> ApiResult<(u32, u64)> {
    let limit = limit.unwrap_or(50);
    let offset = offset.unwrap_or(0);
    Validator::new()
        .check(
            (1..=MAX_LIMIT).contains(&limit),
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        )
        .check(
            offset <= MAX_OFFSET,
            "offset",
            format!("must be at most {MAX_OFFSET}"),
        )
        .finish()?;
    Ok((limit, offset))
}

/// The longest search text a list accepts.
pub const MAX_SEARCH_CHARS: usize = 200;

/// Trims `search` (the `q` parameter) and drops it when empty; refused
/// when longer than [`MAX_SEARCH_CHARS`] or holding control characters.
pub fn search_term(search: Option<String>) -> ApiResult<Option<String>> {
    let Some(search) = search.map(|s| s.trim().to_owned()) else {
        return Ok(None);
    };
    Validator::new()
        .check(
            search.chars().count() <= MAX_SEARCH_CHARS && !search.chars().any(char::is_control),
            "q",
            format!("must be at most {MAX_SEARCH_CHARS} characters, without control characters"),
        )
        .finish()?;
    Ok(Some(search).filter(|s| !s.is_empty()))
}

/// Writes an audit entry for an action of `actor`: [`crate::audit::record`]
/// for handlers that hold the whole state.
pub async fn audit(
    state: &AppState,
    actor: &Caller,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> ApiResult<()> {
    crate::audit::record(state.store.as_ref(), &actor.user, action, target, details).await?;
    Ok(())
}

/// Records a usage event for the statistics: [`crate::usage::record`] for
/// handlers that hold the whole state.
pub async fn usage(state: &AppState, user_id: &str, kind: &str) {
    crate::usage::record(state.store.as_ref(), user_id, kind).await
}

/// An SSE response that names its charset (clients that guess decode
/// non-ASCII text wrongly) and asks proxies not to buffer it.
pub fn event_stream(sse: impl axum::response::IntoResponse) -> axum::response::Response {
    let mut response = sse.into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(
        axum::http::HeaderName::from_static("x-accel-buffering"),
        axum::http::HeaderValue::from_static("no"),
    );
    response
}
