//! `corral node`: a machine that runs models for a Corral host.
//!
//! A node holds backend libraries and model files and runs each model it
//! is given in a worker process of its own (as the host does with
//! `model_workers`), so a crashed engine takes down one model, not the
//! node. It answers over HTTP, every call with `Authorization: Bearer
//! <token>` (the token it was started with); put it behind a TLS reverse
//! proxy when the network between host and node is not trusted.
//!
//! - `GET /health` → [`NodeReport`]: backends, memory, models.
//! - `PUT /models/{id}` ([`Placement`]) → [`ModelInfo`]: loads the model
//!   (a file in the node's models folder, named without a path) under the
//!   host's id; the same placement again is answered at once.
//! - `DELETE /models/{id}`: unloads it.
//! - `POST /models/{id}/generate`, `/cancel/{sequence}`, `/embed`,
//!   `/tokenize`, `/template`: the worker protocol of [`super::worker`].
//!
//! A host names itself in every call ([`HOST_HEADER`], one id per host
//! process). A model is held for the hosts that placed it: a host's
//! `DELETE` lets go for that host only, and a host not heard from for the
//! node's lease lets go of all it held, so a host that crashed or lost the
//! network leaves nothing loaded behind. The ids only coordinate hosts that
//! hold the token; the token is the node's only boundary.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use corral_sdk::backend::{BackendError, GenerateRequest, LoadRequest, Model, ModelInfo};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::backends::BackendSet;
use super::worker::{
    backend_failure, blocking, cancel_sequence, failure, stream_generation, Sequences,
    TemplateRequest, TokenizeRequest, SEQUENCE_HEADER,
};

/// The shortest token a node accepts.
pub const MIN_TOKEN_LEN: usize = 16;

/// What the host asks a node to load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub backend: String,
    /// The model file's name in the node's models folder.
    pub file: String,
    /// The file's size on the host, when known: a different size on the
    /// node means a different (or half-copied) file.
    pub size_bytes: Option<u64>,
    /// Its `path` is ignored: the node finds the file itself.
    pub request: LoadRequest,
}

/// The header of a `DELETE /models/{id}` that names the placement to
/// remove: a newer placement under the same id stays.
pub const PLACEMENT_HEADER: &str = "x-corral-placement";

/// The header naming the host process that makes a call.
pub const HOST_HEADER: &str = "x-corral-host";

/// Hosts a node keeps track of at once; calls from more are served, and
/// what they place is held for no host (freed only by a plain `DELETE`).
const MAX_HOSTS: usize = 256;

impl Placement {
    /// A short digest that tells placements apart.
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&bytes)
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// A model a node holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostedModel {
    pub id: String,
    pub backend: String,
    pub file: String,
    pub memory_bytes: u64,
    /// The digest of its placement ([`Placement::digest`]).
    #[serde(default)]
    pub placement: String,
    /// The host processes that hold it.
    #[serde(default)]
    pub owners: Vec<String>,
}

/// A node's answer to `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    pub version: String,
    pub backends: Vec<String>,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub models: Vec<HostedModel>,
}

struct Hosted {
    placement: Placement,
    model: Arc<dyn Model>,
    info: ModelInfo,
    /// The hosts that placed it and have not let go. Empty for a model
    /// placed by a host that gave no (or no tracked) id: it is never freed
    /// by a lease.
    owners: std::collections::BTreeSet<String>,
}

struct Node {
    token_digest: [u8; 32],
    backends: BackendSet,
    models_dir: PathBuf,
    models: tokio::sync::RwLock<HashMap<String, Hosted>>,
    /// One load at a time.
    loading: tokio::sync::Mutex<()>,
    sequences: Sequences,
    /// When each host was last heard from.
    hosts: std::sync::Mutex<HashMap<String, Instant>>,
    /// How long a host's models outlive its silence.
    lease: Duration,
}

impl Node {
    /// Notes a call from `host`, unless too many hosts are tracked.
    fn heard_from(&self, host: &str) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if hosts.len() < MAX_HOSTS || hosts.contains_key(host) {
            hosts.insert(host.to_owned(), Instant::now());
        }
    }

    /// The calling host's id, when it gives one and is tracked.
    fn tracked_caller(&self, headers: &HeaderMap) -> Option<String> {
        let host = caller_host(headers)?;
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.contains_key(&host).then_some(host)
    }

    /// Frees the models whose host has been silent for the lease.
    async fn free_abandoned(&self) {
        let now = Instant::now();
        let mut models = self.models.write().await;
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.retain(|_, seen| now.duration_since(*seen) < self.lease);
        models.retain(|id, hosted| {
            if hosted.owners.is_empty() {
                return true;
            }
            hosted.owners.retain(|owner| hosts.contains_key(owner));
            let keep = !hosted.owners.is_empty();
            if !keep {
                tracing::info!(
                    %id,
                    lease_secs = self.lease.as_secs_f64(),
                    "model freed: no host that holds it was heard from within the lease"
                );
            }
            keep
        });
    }
}

/// The calling host's id, when it gives a well-formed one.
pub(super) fn caller_host(headers: &HeaderMap) -> Option<String> {
    headers
        .get(HOST_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_id(v))
        .map(str::to_owned)
}

type Shared = Arc<Node>;

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Serves `backends` (already wrapped to run in worker processes) on
/// `listen` until the process ends; with `tls`, over HTTPS only.
pub async fn run(
    listen: SocketAddr,
    token: &str,
    backends: BackendSet,
    models_dir: &Path,
    lease: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        token.len() >= MIN_TOKEN_LEN,
        "the node token must have at least {MIN_TOKEN_LEN} characters"
    );
    let models_dir = models_dir
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("the models folder {}: {e}", models_dir.display()))?;
    let names = backends.names();
    let node = Arc::new(Node {
        token_digest: digest(token),
        backends,
        models_dir,
        models: tokio::sync::RwLock::default(),
        loading: tokio::sync::Mutex::default(),
        sequences: Sequences::default(),
        hosts: std::sync::Mutex::default(),
        lease,
    });
    let sweeper = Arc::downgrade(&node);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(node) = sweeper.upgrade() else { break };
            node.free_abandoned().await;
        }
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%listen, %scheme, backends = ?names, models = %node.models_dir.display(), "node listening");
    // The same bounds as the host's own listener: a slow or idle client
    // cannot hold the node's connections before its token is even read.
    let limits = crate::listener::ConnectionLimits::from_config(&crate::config::Config::default());
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    crate::listener::serve(listener, router(node), limits, tls, std::future::pending()).await?;
    Ok(())
}

fn router(node: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/models/{id}", put(place).delete(remove))
        .route("/models/{id}/generate", post(generate))
        .route("/models/{id}/cancel/{sequence}", post(cancel))
        .route("/models/{id}/embed", post(embed))
        .route("/models/{id}/tokenize", post(tokenize))
        .route("/models/{id}/template", post(template))
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            authorize,
        ))
        .with_state(node)
}

async fn authorize(State(node): State<Shared>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Digests of equal length compare in the same time whatever the token.
    match given {
        Some(token) if digest(token) == node.token_digest => {
            if let Some(host) = caller_host(request.headers()) {
                node.heard_from(&host);
            }
            next.run(request).await
        }
        _ => failure(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            BackendError::InvalidRequest("a valid node token is required".into()),
        ),
    }
}

/// Ids the host gives: its model ids.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn invalid(code: &str, message: String) -> Response {
    failure(
        StatusCode::UNPROCESSABLE_ENTITY,
        code,
        BackendError::InvalidRequest(message),
    )
}

/// The model file `name` in the models folder: a plain file name, so the
/// host can name nothing else. (A link in the folder is the node's
/// operator's choice and is followed.)
fn model_file(models_dir: &Path, name: &str) -> Result<PathBuf, String> {
    let plain = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0']);
    if !plain {
        return Err(format!(
            "`{name}` is not a file name: a node loads only files in its models folder, named without a path"
        ));
    }
    let path = models_dir.join(name);
    if !path.is_file() {
        return Err(format!(
            "the file `{name}` is not in this node's models folder; copy it there first"
        ));
    }
    Ok(path)
}

/// Memory of the machine from /proc/meminfo: (total, available).
fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kb| kb * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

async fn health(State(node): State<Shared>) -> Json<NodeReport> {
    let (total, available) = memory();
    let mut models: Vec<HostedModel> = node
        .models
        .read()
        .await
        .iter()
        .map(|(id, hosted)| HostedModel {
            id: id.clone(),
            backend: hosted.placement.backend.clone(),
            file: hosted.placement.file.clone(),
            memory_bytes: hosted.info.memory_bytes,
            placement: hosted.placement.digest(),
            owners: hosted.owners.iter().cloned().collect(),
        })
        .collect();
    models.sort_by(|a, b| a.id.cmp(&b.id));
    Json(NodeReport {
        version: env!("CARGO_PKG_VERSION").into(),
        backends: node.backends.names(),
        memory_total_bytes: total,
        memory_available_bytes: available,
        models,
    })
}

async fn place(
    State(node): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Json(placement): Json<Placement>,
) -> Response {
    if !valid_id(&id) {
        return invalid("invalid_id", format!("`{id}` is not a model id"));
    }
    let owner = node.tracked_caller(&headers);
    let _one_load = node.loading.lock().await;
    if let Some(hosted) = node.models.write().await.get_mut(&id) {
        if hosted.placement == placement {
            // Held for this host as well.
            hosted.owners.extend(owner);
            return Json(hosted.info.clone()).into_response();
        }
    }
    let Some(backend) = node.backends.get(&placement.backend) else {
        return invalid(
            "backend_missing",
            format!(
                "this node has no `{}` backend (it has: {})",
                placement.backend,
                node.backends.names().join(", ")
            ),
        );
    };
    let path = match model_file(&node.models_dir, &placement.file) {
        Ok(path) => path,
        Err(message) => return invalid("file_missing", message),
    };
    if let Some(expected) = placement.size_bytes.filter(|n| *n > 0) {
        let actual = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if actual != expected {
            return invalid(
                "file_differs",
                format!(
                    "the file `{}` on this node has {actual} bytes, the host's has {expected}",
                    placement.file
                ),
            );
        }
    }
    // The old model goes first, so that both never hold memory at once.
    node.models.write().await.remove(&id);
    let backend = backend.backend.clone();
    let mut request = placement.request.clone();
    request.path = path.to_string_lossy().into_owned();
    let full_path = request.path.clone();
    let loaded = tokio::task::spawn_blocking(move || backend.load(&request, &mut |_| true)).await;
    // The node's folders are none of the host's business: errors name the
    // file only.
    let loaded = loaded.map(|r| r.map_err(|e| without_path(e, &full_path, &placement.file)));
    match loaded {
        Ok(Ok(model)) => {
            let model: Arc<dyn Model> = Arc::from(model);
            let info = model.info();
            tracing::info!(%id, file = %placement.file, "model placed");
            node.models.write().await.insert(
                id,
                Hosted {
                    placement,
                    model,
                    info: info.clone(),
                    owners: owner.into_iter().collect(),
                },
            );
            Json(info).into_response()
        }
        Ok(Err(e)) => backend_failure(e),
        Err(e) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            BackendError::Internal(format!("the load task failed: {e}")),
        ),
    }
}

fn without_path(error: BackendError, path: &str, file: &str) -> BackendError {
    let strip = |m: String| m.replace(path, file);
    match error {
        BackendError::InvalidModel(m) => BackendError::InvalidModel(strip(m)),
        BackendError::InvalidRequest(m) => BackendError::InvalidRequest(strip(m)),
        BackendError::ContextOverflow(m) => BackendError::ContextOverflow(strip(m)),
        BackendError::Unsupported(m) => BackendError::Unsupported(strip(m)),
        BackendError::Internal(m) => BackendError::Internal(strip(m)),
    }
}

async fn remove(
    State(node): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> StatusCode {
    let wanted = headers.get(PLACEMENT_HEADER).and_then(|v| v.to_str().ok());
    let caller = caller_host(&headers);
    let mut models = node.models.write().await;
    let Some(hosted) = models.get_mut(&id) else {
        return StatusCode::NOT_FOUND;
    };
    // The host let go of an older placement; the newer one stays.
    if wanted.is_some_and(|w| w != hosted.placement.digest()) {
        return StatusCode::CONFLICT;
    }
    if let Some(caller) = &caller {
        hosted.owners.remove(caller);
        if !hosted.owners.is_empty() {
            // Held for other hosts too: it stays for them.
            return StatusCode::NO_CONTENT;
        }
    }
    models.remove(&id);
    tracing::info!(%id, "model removed");
    StatusCode::NO_CONTENT
}

async fn hosted(node: &Node, id: &str) -> Result<Arc<dyn Model>, Response> {
    node.models
        .read()
        .await
        .get(id)
        .map(|h| h.model.clone())
        .ok_or_else(|| {
            failure(
                StatusCode::CONFLICT,
                "not_loaded",
                BackendError::InvalidRequest(format!("model `{id}` is not loaded on this node")),
            )
        })
}

async fn generate(
    State(node): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Json(request): Json<GenerateRequest>,
) -> Response {
    let model = match hosted(&node, &id).await {
        Ok(model) => model,
        Err(response) => return response,
    };
    let sequence = headers
        .get(SEQUENCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| format!("{id}/{s}"));
    stream_generation(model, node.sequences.clone(), sequence, request)
}

async fn cancel(
    State(node): State<Shared>,
    UrlPath((id, sequence)): UrlPath<(String, String)>,
) -> StatusCode {
    cancel_sequence(&node.sequences, &format!("{id}/{sequence}"))
}

async fn embed(
    State(node): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Json(inputs): Json<Vec<String>>,
) -> Response {
    match hosted(&node, &id).await {
        Ok(model) => blocking(move || model.embed(&inputs)).await,
        Err(response) => response,
    }
}

async fn tokenize(
    State(node): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<TokenizeRequest>,
) -> Response {
    match hosted(&node, &id).await {
        Ok(model) => blocking(move || model.tokenize(&req.text, req.add_bos)).await,
        Err(response) => response,
    }
}

async fn template(
    State(node): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<TemplateRequest>,
) -> Response {
    match hosted(&node, &id).await {
        Ok(model) => {
            blocking(move || model.apply_chat_template(&req.messages, req.add_generation_prompt))
                .await
        }
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_in_the_folder_are_model_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let models = root.join("models");
        std::fs::create_dir(&models).unwrap();
        std::fs::write(models.join("a.gguf"), b"x").unwrap();
        std::fs::write(root.join("secret"), b"x").unwrap();
        std::fs::create_dir(models.join("sub.gguf")).unwrap();

        assert_eq!(
            model_file(&models, "a.gguf").unwrap(),
            models.join("a.gguf")
        );
        for name in [
            "../secret",
            "/etc/passwd",
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
        ] {
            assert!(model_file(&models, name).is_err(), "{name}");
        }
        assert!(
            model_file(&models, "sub.gguf").is_err(),
            "a folder is no file"
        );
        let missing = model_file(&models, "b.gguf").unwrap_err();
        assert!(missing.contains("copy it there"), "{missing}");
    }

    #[test]
    fn load_errors_name_the_file_not_the_folder() {
        let e = without_path(
            BackendError::InvalidModel("cannot read /srv/models/a.gguf: bad magic".into()),
            "/srv/models/a.gguf",
            "a.gguf",
        );
        assert_eq!(
            e,
            BackendError::InvalidModel("cannot read a.gguf: bad magic".into())
        );
    }

    #[test]
    fn ids_are_plain() {
        assert!(valid_id("0193a1b2-c3d4"));
        assert!(!valid_id("../x"));
        assert!(!valid_id(""));
        assert!(!valid_id(&"a".repeat(101)));
    }

    #[test]
    fn memory_is_read() {
        let (total, available) = memory();
        assert!(total > 0 && available > 0 && available <= total);
    }
}
