//! Plugins over HTTP. Technicians install (a component and its manifest),
//! approve capabilities, configure, turn on and off, upgrade and delete
//! plugins, and see how each hook performs; users turn on the optional
//! ones for themselves; everyone signed in reaches a plugin's own routes
//! under `/api/plugins/{id}/…`.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use corral_plugin_host::{
    Capability, PluginError, PluginStatus, RouteRequest, MAX_ROUTE_BODY_BYTES,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::error::{ApiResult, AppError, Json, Path};
use crate::generation::hook_caller;
use crate::model::PluginRecord;
use crate::plugins::{self, plugin_error, Changes};
use crate::policy::Caller;
use crate::state::AppState;
use crate::time::serde_millis;

/// The largest component (.wasm) accepted.
pub const MAX_COMPONENT_BYTES: usize = 64 * 1024 * 1024;
/// The largest manifest accepted.
const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// The largest upload: a component, its manifest and the form around them.
pub const MAX_UPLOAD_BYTES: usize = MAX_COMPONENT_BYTES + 2 * MAX_MANIFEST_BYTES;

/// Calls and times of one hook (or route handler) of a plugin.
#[derive(Debug, Serialize, ToSchema)]
pub struct HookStats {
    /// `before-prompt`, `on-chunk`, `finish`, `after-answer` or `handle`.
    #[schema(example = "before-prompt")]
    pub hook: String,
    pub calls: u64,
    /// Calls that failed: a trap, out of time or memory, invalid output.
    pub errors: u64,
    /// Median time of a call, µs, including starting the plugin's
    /// instance on a generation's first call.
    pub p50_us: u64,
    pub p99_us: u64,
}

/// Limits in force for a plugin (its manifest's, capped by the host).
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginLimits {
    pub memory_mb: u32,
    /// Per call.
    pub time_ms: u32,
    /// Key-value quota, all users together.
    pub kv_kb: u32,
}

/// A plugin as technicians see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginView {
    #[schema(example = "pii-redact")]
    pub id: String,
    pub name: String,
    /// The plugin's own version.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// The `corral:plugin` interface version it was built against.
    #[schema(example = "0.1.0")]
    pub api: String,
    pub description: String,
    /// Lower runs first.
    pub priority: i32,
    /// `skip` or `fail-closed`: what a generation does when it fails.
    pub failure: String,
    /// Hooks it implements: `before-prompt`, `stream`, `after-answer`.
    pub hooks: Vec<String>,
    /// Routes it serves under `/api/plugins/{id}/`, as `METHOD path`.
    pub routes: Vec<String>,
    /// Capabilities the manifest asks for.
    pub capabilities: Vec<String>,
    /// Of those, the ones a technician approved.
    pub approved: Vec<String>,
    /// Hosts the manifest declares for outgoing HTTP (`[http] hosts`):
    /// `api.example.com`, `*.example.com` (subdomains), with `:port` or
    /// `:*`; without a port only 80 and 443.
    pub http_hosts: Vec<String>,
    /// Of those, the ones a technician approved (they count while `http`
    /// is approved).
    pub approved_hosts: Vec<String>,
    /// Whether outgoing HTTP may reach loopback, link-local and private
    /// addresses (off: only public addresses).
    pub private_network: bool,
    /// A technician's switch.
    pub enabled: bool,
    /// Users turn it on for themselves.
    pub optional: bool,
    /// Models it runs for; `null`: every model.
    pub models: Option<Vec<String>>,
    /// Whether it runs now: enabled, loaded and not turned off.
    pub active: bool,
    /// Why the host turned it off (repeated failures, or it no longer
    /// loads).
    pub disabled_reason: Option<String>,
    /// The configuration, secret fields left out.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// Secret fields and whether each has a saved value.
    pub secrets: Vec<SecretField>,
    /// The JSON Schema of the configuration.
    #[schema(value_type = Object)]
    pub config_schema: serde_json::Value,
    pub limits: Option<PluginLimits>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub stats: Vec<HookStats>,
    /// SHA-256 of the component.
    pub component_sha256: String,
    #[serde(with = "serde_millis")]
    pub installed_at: DateTime<Utc>,
    #[serde(with = "serde_millis")]
    pub updated_at: DateTime<Utc>,
}

/// A secret configuration field.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretField {
    pub name: String,
    /// Whether a value is saved (it is never shown).
    pub set: bool,
}

fn view(state: &AppState, record: PluginRecord) -> PluginView {
    let status: Option<PluginStatus> = state.plugins.status(&record.id);
    // The runtime holds the parsed manifest of a loaded plugin.
    let parsed = status
        .as_ref()
        .map(|s| s.manifest.clone())
        .or_else(|| corral_plugin_host::Manifest::parse(&record.manifest).ok());
    let secret_names = parsed
        .as_ref()
        .map(|m| m.secret_fields())
        .unwrap_or_default();
    let mut config = record.config.clone();
    let secrets = secret_names
        .iter()
        .map(|name| {
            let set = config
                .as_object_mut()
                .and_then(|c| c.remove(name))
                .is_some_and(|v| !v.is_null());
            SecretField {
                name: name.clone(),
                set,
            }
        })
        .collect();
    PluginView {
        id: record.id.clone(),
        name: parsed
            .as_ref()
            .map_or_else(|| record.id.clone(), |m| m.name.clone()),
        version: parsed
            .as_ref()
            .map(|m| m.version.clone())
            .unwrap_or_default(),
        api: parsed.as_ref().map(|m| m.api.clone()).unwrap_or_default(),
        description: parsed
            .as_ref()
            .map(|m| m.description.clone())
            .unwrap_or_default(),
        priority: parsed.as_ref().map_or(0, |m| m.priority),
        failure: parsed
            .as_ref()
            .map(|m| m.failure.as_str().to_owned())
            .unwrap_or_default(),
        hooks: parsed
            .as_ref()
            .map(|m| m.hooks.iter().map(|h| h.as_str().to_owned()).collect())
            .unwrap_or_default(),
        routes: parsed
            .as_ref()
            .map(|m| m.routes.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default(),
        capabilities: parsed
            .as_ref()
            .map(|m| {
                m.capabilities
                    .iter()
                    .map(|c| c.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        approved: record.approved.clone(),
        http_hosts: parsed
            .as_ref()
            .map(|m| m.http_hosts.iter().map(|h| h.to_string()).collect())
            .unwrap_or_default(),
        approved_hosts: record.approved_hosts.clone(),
        private_network: record.private_network,
        enabled: record.enabled,
        optional: record.optional,
        models: record.models.clone(),
        active: status.as_ref().is_some_and(|s| s.active),
        disabled_reason: record
            .disabled_reason
            .clone()
            .or_else(|| status.as_ref().and_then(|s| s.disabled_reason.clone())),
        config,
        secrets,
        config_schema: parsed
            .as_ref()
            .map(|m| m.config.to_json_schema())
            .unwrap_or_else(|| json!({"type": "object"})),
        limits: status.as_ref().map(|s| PluginLimits {
            memory_mb: s.limits.memory_mb,
            time_ms: s.limits.time_ms,
            kv_kb: s.limits.kv_kb,
        }),
        consecutive_failures: status.as_ref().map_or(0, |s| s.consecutive_failures),
        last_error: status.as_ref().and_then(|s| s.last_error.clone()),
        stats: status
            .map(|s| {
                s.stats
                    .into_iter()
                    .map(|e| HookStats {
                        hook: e.export.as_str().to_owned(),
                        calls: e.calls,
                        errors: e.errors,
                        p50_us: e.p50_us,
                        p99_us: e.p99_us,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        component_sha256: record.component_sha256,
        installed_at: record.installed_at,
        updated_at: record.updated_at,
    }
}

/// Installed plugins, by id.
#[utoipa::path(get, path = "/api/plugins", tag = "plugins",
    responses((status = 200, description = "Installed plugins", body = Vec<PluginView>)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<PluginView>>> {
    let records = state.store.list_plugins().await?;
    Ok(Json(records.into_iter().map(|r| view(&state, r)).collect()))
}

/// One plugin.
#[utoipa::path(get, path = "/api/plugins/{id}", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id")),
    responses(
        (status = 200, description = "The plugin", body = PluginView),
        (status = 404, description = "No such plugin", body = corral_sdk::ErrorBody),
    ))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PluginView>> {
    Ok(Json(view(&state, plugins::get(&state, &id).await?)))
}

/// A plugin upload: `multipart/form-data` with the fields `manifest` (the
/// plugin.toml text) and `component` (the .wasm file).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct PluginUpload {
    /// plugin.toml.
    manifest: String,
    /// The WebAssembly component.
    #[schema(value_type = String, format = Binary)]
    component: Vec<u8>,
}

/// Reads the two parts of an upload.
async fn upload_parts(
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(String, Vec<u8>)> {
    let mut multipart = multipart.map_err(|_| {
        AppError::UnsupportedMediaType(
            "send multipart/form-data with the parts `manifest` and `component`".into(),
        )
    })?;
    let mut manifest = None;
    let mut component = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(err) => return Err(multipart_error(err)),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(multipart_error)?;
        match name.as_str() {
            "manifest" => {
                if bytes.len() > MAX_MANIFEST_BYTES {
                    return Err(AppError::field(
                        "manifest",
                        format!("must be at most {MAX_MANIFEST_BYTES} bytes"),
                    ));
                }
                let text = String::from_utf8(bytes.to_vec())
                    .map_err(|_| AppError::field("manifest", "must be UTF-8 text"))?;
                manifest = Some(text);
            }
            "component" => component = Some(bytes.to_vec()),
            other => {
                return Err(AppError::BadRequest(format!(
                    "unexpected part `{other}`; send `manifest` and `component`"
                )))
            }
        }
    }
    match (manifest, component) {
        (Some(m), Some(c)) => Ok((m, c)),
        (None, _) => Err(AppError::field("manifest", "is missing")),
        (_, None) => Err(AppError::field("component", "is missing")),
    }
}

fn multipart_error(err: axum::extract::multipart::MultipartError) -> AppError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge(format!(
            "a plugin upload may be at most {} MiB",
            MAX_COMPONENT_BYTES / (1024 * 1024)
        ))
    } else {
        AppError::BadRequest(format!("the upload is not valid multipart data: {err}"))
    }
}

/// Install a plugin. It starts turned off with no capability approved:
/// review what it asks for, approve, configure and turn it on with
/// `PATCH /api/plugins/{id}`.
#[utoipa::path(post, path = "/api/plugins", tag = "plugins",
    request_body(content = PluginUpload, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Installed (turned off)", body = PluginView),
        (status = 400, description = "The manifest or component is not valid", body = corral_sdk::ErrorBody),
        (status = 409, description = "A plugin with this id is installed", body = corral_sdk::ErrorBody),
        (status = 413, description = "The upload is too large", body = corral_sdk::ErrorBody),
        (status = 415, description = "Not a multipart upload", body = corral_sdk::ErrorBody),
        (status = 422, description = "Built for an interface version this host does not support, or imports what it does not ask for", body = corral_sdk::ErrorBody),
    ))]
pub async fn install(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<PluginView>)> {
    let (manifest, component) = upload_parts(multipart).await?;
    let record = plugins::install(&state, &caller.user, manifest, component).await?;
    let details = json!({"sha256": record.component_sha256});
    crate::api::audit(&state, &caller, "plugin.install", &record.id, details).await?;
    Ok((StatusCode::CREATED, Json(view(&state, record))))
}

/// Upgrade a plugin to a new component and manifest of the same id. Its
/// settings, configuration and data are kept; approvals of capabilities
/// it no longer asks for are dropped.
#[utoipa::path(put, path = "/api/plugins/{id}/component", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id")),
    request_body(content = PluginUpload, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Upgraded", body = PluginView),
        (status = 400, description = "Not valid, or its saved configuration does not fit the new version", body = corral_sdk::ErrorBody),
        (status = 404, description = "No such plugin", body = corral_sdk::ErrorBody),
        (status = 415, description = "Not a multipart upload", body = corral_sdk::ErrorBody),
        (status = 422, description = "Another id, an unsupported interface version or a refused import", body = corral_sdk::ErrorBody),
    ))]
pub async fn upgrade(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<PluginView>> {
    plugins::get(&state, &id).await?;
    let (manifest, component) = upload_parts(multipart).await?;
    let record = plugins::upgrade(&state, &id, manifest, component).await?;
    let details = json!({"sha256": record.component_sha256});
    crate::api::audit(&state, &caller, "plugin.upgrade", &id, details).await?;
    Ok(Json(view(&state, record)))
}

/// Changes to a plugin; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginChanges {
    pub enabled: Option<bool>,
    pub optional: Option<bool>,
    /// Models it runs for; `null`: every model.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub models: Option<Option<Vec<String>>>,
    /// The capabilities approved (replaces the list); only ones the
    /// manifest asks for.
    pub approved: Option<Vec<String>>,
    /// The hosts approved for outgoing HTTP (replaces the list); only
    /// ones the manifest declares.
    pub approved_hosts: Option<Vec<String>>,
    /// Let outgoing HTTP reach loopback, link-local and private addresses.
    pub private_network: Option<bool>,
}

/// A field that is present, `null` included (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Approve capabilities and the hosts outgoing HTTP may reach, turn a
/// plugin on or off (turning it on clears why the host turned it off),
/// make it optional, or limit it to models.
#[utoipa::path(patch, path = "/api/plugins/{id}", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id")),
    request_body = PluginChanges,
    responses(
        (status = 200, description = "Changed", body = PluginView),
        (status = 404, description = "No such plugin", body = corral_sdk::ErrorBody),
        (status = 422, description = "A capability it does not ask for, a host it does not declare, or an unknown model", body = corral_sdk::ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<PluginChanges>,
) -> ApiResult<Json<PluginView>> {
    if let Some(approved) = &req.approved {
        if let Some(bad) = approved.iter().find(|c| c.parse::<Capability>().is_err()) {
            return Err(AppError::field(
                "approved",
                format!("`{bad}` is not a capability (log, kv, config, generate, embed, http)"),
            ));
        }
    }
    if let Some(Some(models)) = &req.models {
        for name in models {
            if state.store.get_model_by_name(name).await?.is_none() {
                return Err(AppError::field(
                    "models",
                    format!("no model is named `{name}`"),
                ));
            }
        }
    }
    let details = json!({
        "enabled": req.enabled,
        "optional": req.optional,
        "models": req.models,
        "approved": req.approved,
        "approved_hosts": req.approved_hosts,
        "private_network": req.private_network,
    });
    let changes = Changes {
        enabled: req.enabled,
        optional: req.optional,
        models: req.models,
        approved: req.approved,
        approved_hosts: req.approved_hosts,
        private_network: req.private_network,
    };
    let record = plugins::update(&state, &id, changes).await?;
    crate::api::audit(&state, &caller, "plugin.update", &id, details).await?;
    Ok(Json(view(&state, record)))
}

/// Save a plugin's configuration (a JSON object checked against its
/// schema). A secret field left out or `null` keeps its saved value.
#[utoipa::path(put, path = "/api/plugins/{id}/config", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id")),
    request_body(content = Object, description = "The configuration"),
    responses(
        (status = 200, description = "Saved", body = PluginView),
        (status = 404, description = "No such plugin", body = corral_sdk::ErrorBody),
        (status = 422, description = "The configuration does not fit the schema", body = corral_sdk::ErrorBody),
    ))]
pub async fn configure(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(config): Json<serde_json::Value>,
) -> ApiResult<Json<PluginView>> {
    let record = plugins::configure(&state, &id, config).await?;
    // Which fields changed, never their values (some are secret).
    let fields: Vec<&String> = record
        .config
        .as_object()
        .map(|c| c.keys().collect())
        .unwrap_or_default();
    crate::api::audit(
        &state,
        &caller,
        "plugin.configure",
        &id,
        json!({"fields": fields}),
    )
    .await?;
    Ok(Json(view(&state, record)))
}

/// Delete a plugin with its stored data.
#[utoipa::path(delete, path = "/api/plugins/{id}", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such plugin", body = corral_sdk::ErrorBody),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    plugins::delete(&state, &id).await?;
    crate::api::audit(&state, &caller, "plugin.delete", &id, json!({})).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An optional plugin, as a user sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OptionalPlugin {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Whether the caller turned it on for their chats.
    pub enabled: bool,
}

fn optional_view(record: &PluginRecord, enabled: bool) -> OptionalPlugin {
    let parsed = corral_plugin_host::Manifest::parse(&record.manifest).ok();
    OptionalPlugin {
        id: record.id.clone(),
        name: parsed
            .as_ref()
            .map_or_else(|| record.id.clone(), |m| m.name.clone()),
        description: parsed.map(|m| m.description).unwrap_or_default(),
        enabled,
    }
}

/// Plugins the caller may turn on for their own chats.
#[utoipa::path(get, path = "/api/me/plugins", tag = "plugins", operation_id = "my_plugins",
    responses((status = 200, description = "Optional plugins", body = Vec<OptionalPlugin>)))]
pub async fn mine(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<OptionalPlugin>>> {
    let list = plugins::optional_for(&state, &caller.user).await?;
    Ok(Json(
        list.iter()
            .map(|(record, on)| optional_view(record, *on))
            .collect(),
    ))
}

/// Turning an optional plugin on or off.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MyPluginChoice {
    pub enabled: bool,
}

/// Turn an optional plugin on or off for the caller's chats and API
/// requests.
#[utoipa::path(put, path = "/api/me/plugins/{id}", tag = "plugins", operation_id = "choose_my_plugin",
    params(("id" = String, Path, description = "Plugin id")),
    request_body = MyPluginChoice,
    responses(
        (status = 200, description = "Saved", body = OptionalPlugin),
        (status = 404, description = "No such optional plugin", body = corral_sdk::ErrorBody),
    ))]
pub async fn choose(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<MyPluginChoice>,
) -> ApiResult<Json<OptionalPlugin>> {
    plugins::choose(&state, &caller.user, &id, req.enabled).await?;
    let record = plugins::get(&state, &id).await?;
    Ok(Json(optional_view(&record, req.enabled)))
}

/// Headers a plugin is never shown (the caller's credentials).
const HIDDEN_REQUEST_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];
/// Headers a plugin may not set on its answers.
const REFUSED_RESPONSE_HEADERS: [&str; 9] = [
    "set-cookie",
    // What a route answers is the caller's; Corral keeps it out of caches.
    "cache-control",
    "content-security-policy",
    "x-content-type-options",
    "content-length",
    "transfer-encoding",
    "connection",
    "strict-transport-security",
    "access-control-allow-origin",
];

/// A request to one of a plugin's routes, answered by the plugin. Corral
/// checks the sign-in first and passes the caller's id, name and role;
/// the plugin decides what the caller may do. Answers run under a
/// sandboxing Content-Security-Policy.
#[utoipa::path(get, path = "/api/plugins/{id}/{path}", tag = "plugins",
    operation_id = "plugin_route_get",
    params(("id" = String, Path, description = "Plugin id"), ("path" = String, Path, description = "The plugin's route")),
    responses(
        (status = "2XX", description = "The plugin's answer"),
        (status = "4XX", description = "The plugin's refusal, no such plugin or route (`not_found`), or the account's `per_user_plugin_requests` under way (429 `busy`)"),
        (status = 502, description = "The plugin failed", body = corral_sdk::ErrorBody),
    ))]
pub async fn route_get(
    state: State<AppState>,
    caller: Caller,
    path: Path<(String, String)>,
    request: Request,
) -> ApiResult<Response> {
    route(state, caller, path, request).await
}

macro_rules! plugin_route {
    ($name:ident, $method:ident, $op:literal) => {
        /// A request to one of a plugin's routes (see `GET`).
        #[utoipa::path($method, path = "/api/plugins/{id}/{path}", tag = "plugins",
            operation_id = $op,
            params(("id" = String, Path, description = "Plugin id"), ("path" = String, Path, description = "The plugin's route")),
            request_body(content = String, description = "Passed to the plugin as it is", content_type = "application/octet-stream"),
            responses(
                (status = "2XX", description = "The plugin's answer"),
                (status = "4XX", description = "The plugin's refusal, no such plugin or route (`not_found`), a body over the limit, or the account's `per_user_plugin_requests` under way (429 `busy`)"),
                (status = 502, description = "The plugin failed", body = corral_sdk::ErrorBody),
            ))]
        pub async fn $name(
            state: State<AppState>,
            caller: Caller,
            path: Path<(String, String)>,
            request: Request,
        ) -> ApiResult<Response> {
            route(state, caller, path, request).await
        }
    };
}

plugin_route!(route_post, post, "plugin_route_post");
plugin_route!(route_put, put, "plugin_route_put");
plugin_route!(route_patch, patch, "plugin_route_patch");
plugin_route!(route_delete, delete, "plugin_route_delete");

async fn route(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, path)): Path<(String, String)>,
    request: Request,
) -> ApiResult<Response> {
    plugins::routable(&state, &id).await?;
    // Held until the plugin answered: one account cannot take the instances
    // every generation's hooks need.
    let _slot = state
        .plugin_requests
        .enter(caller.id(), state.config.per_user_plugin_requests)?;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_ROUTE_BODY_BYTES)
        .await
        .map_err(|_| {
            AppError::PayloadTooLarge(format!(
                "a plugin route takes at most {} KiB",
                MAX_ROUTE_BODY_BYTES / 1024
            ))
        })?;
    let request = RouteRequest {
        method: parts.method.as_str().to_owned(),
        path,
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts
            .headers
            .iter()
            .filter(|(name, _)| !HIDDEN_REQUEST_HEADERS.contains(&name.as_str()))
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect(),
        body: body.to_vec(),
    };
    let answer = state
        .plugins
        .handle_route(&id, &hook_caller(&caller.user), request)
        .await
        .map_err(|err| match err {
            // Callers learn that it failed; what it printed or where it
            // trapped is for technicians (the plugin's status, the log).
            PluginError::PluginFailed { plugin, .. } => AppError::Plugin {
                status: StatusCode::BAD_GATEWAY,
                code: "plugin_failed",
                message: format!("plugin `{plugin}` failed to answer"),
            },
            other => plugin_error(other),
        })?;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, answer.body).into_response();
    let out = response.headers_mut();
    // The plugin says what it sends; bytes otherwise.
    out.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    for (name, value) in answer.headers {
        let lower = name.to_ascii_lowercase();
        if REFUSED_RESPONSE_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(lower.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            if name == axum::http::header::CONTENT_TYPE {
                out.insert(name, value);
            } else {
                out.append(name, value);
            }
        }
    }
    // A plugin's answer never runs as a page of Corral's origin.
    out.insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    out.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}
