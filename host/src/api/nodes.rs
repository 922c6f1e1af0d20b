//! Worker nodes: technicians register machines running `corral node` and
//! follow their health; models are placed on them with the model's
//! `node` field.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::audit;
use crate::error::{ApiResult, AppError, Json, Path};
use crate::inference::nodes::{self, NodeRecord, NodeStatus, MAX_NODES};
use crate::model::ModelRecord;
use crate::policy::Caller;
use crate::registry::valid_name;
use crate::state::AppState;
use crate::time::{now, serde_millis, serde_millis_opt};

/// Lengths a node token may have.
const TOKEN_LEN: std::ops::RangeInclusive<usize> = crate::inference::node::MIN_TOKEN_LEN..=1024;

/// A model a node holds right now.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeModelView {
    /// The model's id in the registry.
    pub id: String,
    /// Its name; `null` for a model the registry no longer has.
    pub name: Option<String>,
    pub backend: String,
    pub file: String,
    pub memory_bytes: u64,
}

/// A worker node and its health. The token is never shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    #[schema(example = "gpu-1")]
    pub name: String,
    #[schema(example = "http://10.0.0.7:7000")]
    pub url: String,
    /// The SHA-256 fingerprint of the node's own certificate, trusted
    /// instead of public certificate authorities.
    #[schema(example = "3F:0A:…")]
    pub tls_fingerprint: Option<String>,
    pub status: NodeStatus,
    /// Why it is down.
    pub reason: Option<String>,
    /// When the status last changed.
    #[serde(with = "serde_millis")]
    #[schema(value_type = String, format = DateTime)]
    pub since: DateTime<Utc>,
    /// Its last answer to a health check.
    #[serde(with = "serde_millis_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen: Option<DateTime<Utc>>,
    /// The latest reason it was marked down, shown after it is up again too.
    pub last_error: Option<String>,
    /// When it was last marked down.
    #[serde(with = "serde_millis_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_error_at: Option<DateTime<Utc>>,
    /// From its last answer: Corral's version on the node.
    pub version: Option<String>,
    /// From its last answer: the backends it can run.
    pub backends: Vec<String>,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    /// From its last answer: the models it holds.
    pub loaded: Vec<NodeModelView>,
    /// Names of the models placed on it.
    pub placed: Vec<String>,
    #[serde(with = "serde_millis")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "serde_millis")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    pub items: Vec<NodeView>,
}

/// A node to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNode {
    #[schema(example = "gpu-1", pattern = r"^[A-Za-z0-9._:-]{1,100}$")]
    pub name: String,
    /// Where `corral node` answers (through its TLS proxy, if any).
    #[schema(example = "https://10.0.0.7:7000", max_length = 2048)]
    pub url: String,
    /// The token the node was started with; never shown again.
    #[schema(min_length = 16, max_length = 1024)]
    pub token: String,
    /// For an `https` URL: the SHA-256 fingerprint `corral node --tls-cert`
    /// prints (64 hex digits, colons allowed). The host then trusts that
    /// certificate only. Without it, the node's certificate must come from
    /// a public certificate authority.
    #[schema(max_length = 200)]
    pub tls_fingerprint: Option<String>,
}

/// Changes to a node; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeChanges {
    /// A URL on another server needs the token given again.
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    #[schema(min_length = 16, max_length = 1024)]
    pub token: Option<String>,
    /// A new pinned certificate fingerprint, or `""` to trust public
    /// certificate authorities again; a change needs the token given
    /// again.
    #[schema(max_length = 200)]
    pub tls_fingerprint: Option<String>,
}

fn check_token(token: &str) -> ApiResult<()> {
    if !TOKEN_LEN.contains(&token.len()) || token.chars().any(|c| c.is_control() || c == ' ') {
        return Err(AppError::field(
            "token",
            format!(
                "must have {} to {} characters, without spaces or control characters",
                TOKEN_LEN.start(),
                TOKEN_LEN.end()
            ),
        ));
    }
    Ok(())
}

/// A fingerprint as stored (`None` for `""`).
fn check_fingerprint(text: &str) -> ApiResult<Option<String>> {
    crate::tls::normalize(text).map_err(|message| AppError::field("tls_fingerprint", message))
}

/// A pinned certificate is only of use over TLS: refuses a pin on an
/// `http` URL rather than send the token in the clear.
fn check_pin_scheme(record: &NodeRecord) -> ApiResult<()> {
    if record.tls_fingerprint.is_some() && !record.url.starts_with("https://") {
        return Err(AppError::field(
            "tls_fingerprint",
            "needs an https URL: a pinned certificate is only checked over TLS",
        ));
    }
    Ok(())
}

fn check_url(state: &AppState, url: &str) -> ApiResult<String> {
    if url.len() > 2048 {
        return Err(AppError::field("url", "must be at most 2048 bytes"));
    }
    state
        .nodes
        .check_url(url)
        .map_err(|message| AppError::field("url", message))
}

/// `record` as the API shows it; `models` are the registered models (read
/// once for a whole listing).
fn view(state: &AppState, record: &NodeRecord, models: &[ModelRecord]) -> NodeView {
    let health = state.nodes.link(&record.name).map(|l| l.health());
    let report = health.as_ref().and_then(|h| h.report.clone());
    let loaded = report
        .as_ref()
        .map(|r| {
            r.models
                .iter()
                .map(|m| NodeModelView {
                    id: m.id.clone(),
                    name: models.iter().find(|r| r.id == m.id).map(|r| r.name.clone()),
                    backend: m.backend.clone(),
                    file: m.file.clone(),
                    memory_bytes: m.memory_bytes,
                })
                .collect()
        })
        .unwrap_or_default();
    NodeView {
        name: record.name.clone(),
        url: record.url.clone(),
        tls_fingerprint: record.tls_fingerprint.clone(),
        status: health.as_ref().map_or(NodeStatus::Unknown, |h| h.status),
        reason: health.as_ref().and_then(|h| h.reason().map(str::to_owned)),
        since: health.as_ref().map_or(record.updated_at, |h| h.since),
        last_seen: health.as_ref().and_then(|h| h.last_seen),
        last_error: health
            .as_ref()
            .and_then(|h| h.last_error.as_ref().map(|(e, _)| e.clone())),
        last_error_at: health
            .as_ref()
            .and_then(|h| h.last_error.as_ref().map(|(_, at)| *at)),
        version: report.as_ref().map(|r| r.version.clone()),
        backends: report
            .as_ref()
            .map(|r| r.backends.clone())
            .unwrap_or_default(),
        memory_total_bytes: report.as_ref().map(|r| r.memory_total_bytes),
        memory_available_bytes: report.as_ref().map(|r| r.memory_available_bytes),
        loaded,
        placed: models
            .iter()
            .filter(|m| m.node.as_deref() == Some(record.name.as_str()))
            .map(|m| m.name.clone())
            .collect(),
        created_at: record.created_at,
        updated_at: record.updated_at,
    }
}

/// One node as the API shows it.
async fn view_one(state: &AppState, record: &NodeRecord) -> ApiResult<NodeView> {
    Ok(view(state, record, &state.store.list_models().await?))
}

/// Asks the node for its health now, so that the answer shows it.
async fn poll_now(state: &AppState, name: &str) {
    if let Some(link) = state.nodes.link(name) {
        state.nodes.poll(link).await;
    }
}

/// Reads the node list from the store again every [`nodes::SYNC_EVERY`]
/// and follows it, for node edits made through other hosts that share the
/// store: the models placed on a node changed or removed there let go of
/// their old address and token. A list that cannot be read is ignored.
pub fn spawn_sync(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(nodes::SYNC_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let changed = {
                let _edit = nodes::EDITS.lock().await;
                match nodes::read_records(state.store.as_ref()).await {
                    Ok(Ok(records)) => state.nodes.sync(&records),
                    Ok(Err(e)) => {
                        tracing::warn!(%e, "the stored list of nodes is unreadable; keeping the nodes followed");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(%e, "could not read the node list");
                        continue;
                    }
                }
            };
            for name in changed {
                if let Err(e) = unload_placed(&state, &name).await {
                    tracing::warn!(node = %name, error = %e.body().message, "could not let go of the models placed on a changed node");
                }
            }
        }
    });
}

/// Lets go of the loaded copies of the models placed on `node`, so that
/// they load again through its new address or token.
async fn unload_placed(state: &AppState, node: &str) -> ApiResult<()> {
    for model in state.store.list_models().await? {
        if model.node.as_deref() == Some(node) {
            state.inference.manager.unload(&model.id);
        }
    }
    Ok(())
}

/// The worker nodes and their health.
#[utoipa::path(get, path = "/api/nodes", tag = "nodes",
    responses((status = 200, description = "The nodes, by name", body = NodeList)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<NodeList>> {
    let mut records = nodes::load_records(state.store.as_ref()).await?;
    records.sort_by(|a, b| a.name.cmp(&b.name));
    let models = state.store.list_models().await?;
    let items = records.iter().map(|r| view(&state, r, &models)).collect();
    Ok(Json(NodeList { items }))
}

/// Register a worker node. The host asks it for its health at once and
/// then every second; the answer shows the first result.
#[utoipa::path(post, path = "/api/nodes", tag = "nodes",
    request_body = NewNode,
    responses(
        (status = 201, description = "Registered", body = NodeView),
        (status = 409, description = "A node with this name exists, there are too many, or other hosts kept changing the list", body = corral_sdk::ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<NewNode>,
) -> ApiResult<(StatusCode, Json<NodeView>)> {
    let name = req.name.trim().to_owned();
    if !valid_name(&name) {
        return Err(AppError::field(
            "name",
            "must be 1 to 100 letters, digits or . _ : -",
        ));
    }
    let url = check_url(&state, &req.url)?;
    check_token(&req.token)?;
    let tls_fingerprint = check_fingerprint(req.tls_fingerprint.as_deref().unwrap_or(""))?;
    let at = now();
    let record = NodeRecord {
        name,
        url,
        token: req.token,
        tls_fingerprint,
        created_at: at,
        updated_at: at,
    };
    check_pin_scheme(&record)?;
    {
        let _edit = nodes::EDITS.lock().await;
        nodes::edit_records(state.store.as_ref(), |records| {
            if records.iter().any(|r| r.name == record.name) {
                return Err(AppError::Conflict(format!(
                    "a worker node is already called `{}`",
                    record.name
                )));
            }
            if records.len() >= MAX_NODES {
                return Err(AppError::Conflict(format!(
                    "a host may have at most {MAX_NODES} worker nodes"
                )));
            }
            records.push(record.clone());
            Ok(())
        })
        .await?;
        state.nodes.set(&record);
    }
    audit(
        &state,
        &caller,
        "node.create",
        &record.name,
        json!({ "url": record.url, "tls_fingerprint": record.tls_fingerprint }),
    )
    .await?;
    poll_now(&state, &record.name).await;
    Ok((StatusCode::CREATED, Json(view_one(&state, &record).await?)))
}

/// Change a node's URL, token or pinned certificate. Its models load
/// again through the new ones.
#[utoipa::path(patch, path = "/api/nodes/{name}", tag = "nodes",
    params(("name" = String, Path, description = "Node name")),
    request_body = NodeChanges,
    responses(
        (status = 200, description = "Changed", body = NodeView),
        (status = 404, description = "No such node", body = corral_sdk::ErrorBody),
        (status = 409, description = "Other hosts kept changing the list", body = corral_sdk::ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(changes): Json<NodeChanges>,
) -> ApiResult<Json<NodeView>> {
    let new_url = changes
        .url
        .as_deref()
        .map(|u| check_url(&state, u))
        .transpose()?;
    if let Some(token) = &changes.token {
        check_token(token)?;
    }
    let new_pin = changes
        .tls_fingerprint
        .as_deref()
        .map(check_fingerprint)
        .transpose()?;
    let (record, details) = {
        let _edit = nodes::EDITS.lock().await;
        let (record, details) = nodes::edit_records(state.store.as_ref(), |records| {
            let record = records
                .iter_mut()
                .find(|r| r.name == name)
                .ok_or(AppError::NotFound("worker node"))?;
            let before = record.clone();
            if let Some(url) = &new_url {
                let origin = |s: &str| reqwest::Url::parse(s).ok().map(|u| u.origin());
                if origin(url) != origin(&before.url) && changes.token.is_none() {
                    return Err(AppError::field(
                        "token",
                        "must be given again when the node moves to another server",
                    ));
                }
                record.url.clone_from(url);
            }
            if let Some(pin) = &new_pin {
                // Trusting another certificate could hand the token to
                // whoever holds that one.
                if *pin != before.tls_fingerprint && changes.token.is_none() {
                    return Err(AppError::field(
                        "token",
                        "must be given again when the pinned certificate changes",
                    ));
                }
                record.tls_fingerprint.clone_from(pin);
            }
            if let Some(token) = &changes.token {
                record.token.clone_from(token);
            }
            check_pin_scheme(record)?;
            let mut details = serde_json::Map::new();
            if record.url != before.url {
                details.insert("url".into(), json!(record.url));
            }
            if record.tls_fingerprint != before.tls_fingerprint {
                details.insert("tls_fingerprint".into(), json!(record.tls_fingerprint));
            }
            if record.token != before.token {
                details.insert("token".into(), json!("replaced"));
            }
            if !details.is_empty() {
                record.updated_at = now();
            }
            Ok((record.clone(), details))
        })
        .await?;
        if details.is_empty() {
            return Ok(Json(view_one(&state, &record).await?));
        }
        state.nodes.set(&record);
        (record, details)
    };
    unload_placed(&state, &record.name).await?;
    audit(
        &state,
        &caller,
        "node.update",
        &record.name,
        serde_json::Value::Object(details),
    )
    .await?;
    poll_now(&state, &record.name).await;
    Ok(Json(view_one(&state, &record).await?))
}

/// Names of the models placed on the node `name`.
async fn placed_on(state: &AppState, name: &str) -> ApiResult<Vec<String>> {
    Ok(state
        .store
        .list_models()
        .await?
        .into_iter()
        .filter(|m| m.node.as_deref() == Some(name))
        .map(|m| m.name)
        .collect())
}

fn in_use(name: &str, placed: &[String]) -> AppError {
    AppError::Conflict(format!(
        "models are placed on `{name}`: {}; move them first",
        placed.join(", ")
    ))
}

/// Remove a node. Models placed on it must be moved first (set their
/// `node` to another node or to `""`).
#[utoipa::path(delete, path = "/api/nodes/{name}", tag = "nodes",
    params(("name" = String, Path, description = "Node name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such node", body = corral_sdk::ErrorBody),
        (status = 409, description = "Models are placed on it, or other hosts kept changing the list", body = corral_sdk::ErrorBody),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    {
        let _edit = nodes::EDITS.lock().await;
        // Model records are written under this lock, so no model can be
        // placed on the node through this host between the check and its
        // removal. Another host sharing the store has a lock of its own:
        // its placement checks the node list again after writing, and the
        // models are checked again here after the removal, so that of two
        // such writes at least one is undone.
        let _models = state.downloads.records.lock().await;
        let placed = placed_on(&state, &name).await?;
        let (index, removed) = nodes::edit_records(state.store.as_ref(), |records| {
            let index = records
                .iter()
                .position(|r| r.name == name)
                .ok_or(AppError::NotFound("worker node"))?;
            if !placed.is_empty() {
                return Err(in_use(&name, &placed));
            }
            Ok((index, records.remove(index)))
        })
        .await?;
        let placed = placed_on(&state, &name).await;
        if !matches!(&placed, Ok(placed) if placed.is_empty()) {
            // Placed through another host meanwhile (or that cannot be
            // told): the node stays.
            let back = nodes::edit_records(state.store.as_ref(), |records| {
                if !records.iter().any(|r| r.name == name) {
                    records.insert(index.min(records.len()), removed.clone());
                }
                Ok(())
            })
            .await;
            if let Err(e) = back {
                tracing::error!(node = %name, error = %e.body().message, "could not put back a node that models were placed on");
            }
            return Err(match placed {
                Ok(placed) => in_use(&name, &placed),
                Err(e) => e,
            });
        }
        state.nodes.remove(&name);
    }
    audit(&state, &caller, "node.delete", &name, json!({})).await?;
    Ok(StatusCode::NO_CONTENT)
}
