//! Loaded models: loaded on first use, shared by every request, unloaded
//! when idle, and evicted least-recently-used first when the memory budget
//! or the cap on loaded models would be exceeded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use corral_sdk::backend::{BackendError, LoadRequest, Model, ModelInfo};
use futures::future::BoxFuture;

use super::backends::BackendSet;
use super::nodes::Nodes;
use super::upstream::{self, Cooldown, Upstreams};
use super::InferenceError;

/// What to load, and under which key it is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    /// The registry's model id.
    pub key: String,
    /// The model's name, for messages.
    pub name: String,
    pub backend: String,
    pub request: LoadRequest,
    /// Bytes on disk; the first guess of the memory it needs.
    pub file_bytes: u64,
    /// For a remote model (backend [`upstream::BACKEND`]): where it is.
    pub upstream: Option<upstream::Target>,
    /// For a model placed on a worker node: the node's name. `request.path`
    /// is then the file's name in the node's models folder.
    pub node: Option<String>,
}

impl LoadSpec {
    /// Whether the model holds memory on this machine.
    pub fn is_local(&self) -> bool {
        self.upstream.is_none() && self.node.is_none()
    }
}

/// Limits of the manager.
#[derive(Debug, Clone, Copy)]
pub struct ManagerLimits {
    /// Unload a model unused this long.
    pub idle_unload: Duration,
    /// Bytes all loaded models may hold together; 0 means no limit.
    pub memory_budget: u64,
    /// Models loaded at once; 0 means no limit.
    pub max_loaded: usize,
}

impl Default for ManagerLimits {
    fn default() -> Self {
        ManagerLimits {
            idle_unload: Duration::from_secs(15 * 60),
            memory_budget: 0,
            max_loaded: 0,
        }
    }
}

/// A model in memory.
pub struct LoadedModel {
    pub spec: LoadSpec,
    pub model: Arc<dyn Model>,
    pub info: ModelInfo,
    pub load_time: Duration,
    /// When the load finished.
    pub loaded_at: chrono::DateTime<chrono::Utc>,
    last_used: Mutex<Instant>,
}

impl LoadedModel {
    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    pub fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// When the model was last handed to a request (or loaded).
    pub fn last_used_at(&self) -> chrono::DateTime<chrono::Utc> {
        let idle = chrono::Duration::from_std(self.idle_for()).unwrap_or_default();
        chrono::Utc::now() - idle
    }

    /// Memory the model holds, as the backend reports it (or the file size).
    pub fn memory_bytes(&self) -> u64 {
        if self.info.memory_bytes > 0 {
            self.info.memory_bytes
        } else {
            self.spec.file_bytes
        }
    }
}

type Cell = Arc<tokio::sync::OnceCell<Arc<LoadedModel>>>;

/// Told the key of a model whose file the backend found unusable, that
/// file, and why; awaited before the load's error is returned.
pub type BadFileHook =
    Arc<dyn Fn(String, std::path::PathBuf, String) -> BoxFuture<'static, ()> + Send + Sync>;

/// The loaded models.
#[derive(Clone)]
pub struct ModelManager {
    backends: Arc<BackendSet>,
    limits: ManagerLimits,
    cells: Arc<Mutex<HashMap<String, (LoadSpec, Cell)>>>,
    on_bad_file: Option<BadFileHook>,
    upstreams: Option<Arc<Upstreams>>,
    nodes: Option<Arc<Nodes>>,
    /// Held from making room to the end of a local load while a limit is
    /// set: two loads at once would each see room for itself alone.
    room: Arc<tokio::sync::Mutex<()>>,
}

impl ModelManager {
    pub fn new(backends: Arc<BackendSet>, limits: ManagerLimits) -> Self {
        ModelManager {
            backends,
            limits,
            cells: Arc::default(),
            on_bad_file: None,
            upstreams: None,
            nodes: None,
            room: Arc::default(),
        }
    }

    /// Runs models placed on worker nodes through `nodes`.
    pub fn with_nodes(mut self, nodes: Arc<Nodes>) -> Self {
        self.nodes = Some(nodes);
        self
    }

    pub fn nodes(&self) -> Option<&Arc<Nodes>> {
        self.nodes.as_ref()
    }

    /// Serves remote models through `upstreams`.
    pub fn with_upstreams(mut self, upstreams: Arc<Upstreams>) -> Self {
        self.upstreams = Some(upstreams);
        self
    }

    /// Whether a remote model may be at `url`, as far as the URL tells.
    pub fn check_upstream_url(&self, url: &str) -> Result<(), String> {
        match &self.upstreams {
            Some(upstreams) => upstreams.check_url(url),
            None => Err("this host serves no remote models".into()),
        }
    }

    /// Whether the remote model `key` is cooling down.
    pub fn cooling(&self, key: &str) -> Option<Cooldown> {
        self.upstreams.as_ref()?.cooling(key)
    }

    /// Forgets what is known of the remote model `key`'s health (it was
    /// changed or removed).
    pub fn forget_health(&self, key: &str) {
        if let Some(upstreams) = &self.upstreams {
            upstreams.forget(key);
        }
    }

    /// Calls `hook` when a load fails because the file itself is bad.
    pub fn on_bad_file(mut self, hook: BadFileHook) -> Self {
        self.on_bad_file = Some(hook);
        self
    }

    pub fn backends(&self) -> &BackendSet {
        &self.backends
    }

    pub fn limits(&self) -> ManagerLimits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (LoadSpec, Cell)>> {
        self.cells.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The model, loading it first if needed. Concurrent callers share one
    /// load. A spec that differs from the loaded one (new file, new
    /// parameters) replaces it.
    pub async fn get(&self, spec: &LoadSpec) -> Result<Arc<LoadedModel>, InferenceError> {
        let cell = {
            let mut cells = self.lock();
            match cells.get(&spec.key) {
                Some((loaded_spec, cell)) if loaded_spec == spec => cell.clone(),
                _ => {
                    let cell: Cell = Arc::default();
                    cells.insert(spec.key.clone(), (spec.clone(), cell.clone()));
                    cell
                }
            }
        };
        let loaded = cell
            .get_or_try_init(|| async {
                // A remote model holds no memory here.
                let limited = self.limits.memory_budget > 0 || self.limits.max_loaded > 0;
                if !(spec.is_local() && limited) {
                    return self.load(spec).await;
                }
                let _turn = self.room.lock().await;
                self.make_room(spec)?;
                self.load(spec).await
            })
            .await?
            .clone();
        loaded.touch();
        Ok(loaded)
    }

    async fn load(&self, spec: &LoadSpec) -> Result<Arc<LoadedModel>, InferenceError> {
        if let Some(target) = &spec.upstream {
            return self.open_upstream(spec, target.clone());
        }
        if let Some(node) = &spec.node {
            return self.open_on_node(spec, node).await;
        }
        let backend = self
            .backends
            .get(&spec.backend)
            .ok_or_else(|| InferenceError::BackendMissing(spec.backend.clone()))?
            .backend
            .clone();
        let request = spec.request.clone();
        let name = spec.name.clone();
        let started = Instant::now();
        let model = tokio::task::spawn_blocking(move || {
            backend.load(&request, &mut |progress| {
                tracing::debug!(model = %name, progress, "loading");
                true
            })
        })
        .await
        .map_err(|e| InferenceError::Internal(format!("the load task failed: {e}")))?
        .map_err(|e| InferenceError::Load {
            model: spec.name.clone(),
            // The server's paths are none of the client's business.
            reason: without_path(&e.to_string(), &spec.request.path),
            bad_file: matches!(e, BackendError::InvalidModel(_)),
        });
        let model = match model {
            Ok(model) => model,
            Err(err) => {
                if let (
                    InferenceError::Load {
                        reason,
                        bad_file: true,
                        ..
                    },
                    Some(hook),
                ) = (&err, &self.on_bad_file)
                {
                    hook(
                        spec.key.clone(),
                        spec.request.path.clone().into(),
                        reason.clone(),
                    )
                    .await;
                }
                return Err(err);
            }
        };
        let model: Arc<dyn Model> = Arc::from(model);
        let info = {
            let model = model.clone();
            tokio::task::spawn_blocking(move || model.info())
                .await
                .map_err(|e| InferenceError::Internal(e.to_string()))?
        };
        let load_time = started.elapsed();
        tracing::info!(model = %spec.name, backend = %spec.backend, secs = load_time.as_secs_f64(), "model loaded");
        Ok(Arc::new(LoadedModel {
            spec: spec.clone(),
            model,
            info,
            load_time,
            loaded_at: chrono::Utc::now(),
            last_used: Mutex::new(Instant::now()),
        }))
    }

    /// A remote model: nothing to load; only a pinned client can fail to
    /// be made.
    fn open_upstream(
        &self,
        spec: &LoadSpec,
        target: upstream::Target,
    ) -> Result<Arc<LoadedModel>, InferenceError> {
        let upstreams = self
            .upstreams
            .as_ref()
            .ok_or_else(|| InferenceError::BackendMissing(upstream::BACKEND.into()))?;
        let info = upstream::model_info(spec.request.context_length, spec.request.slots);
        let model = upstreams
            .model(
                &spec.key,
                &spec.name,
                target,
                info.clone(),
                tokio::runtime::Handle::current(),
            )
            .map_err(|e| {
                InferenceError::Internal(format!("the client for `{}`: {e:#}", spec.name))
            })?;
        Ok(Arc::new(LoadedModel {
            spec: spec.clone(),
            model: Arc::new(model),
            info,
            load_time: Duration::ZERO,
            loaded_at: chrono::Utc::now(),
            last_used: Mutex::new(Instant::now()),
        }))
    }

    /// A model placed on a worker node: loaded there.
    async fn open_on_node(
        &self,
        spec: &LoadSpec,
        node: &str,
    ) -> Result<Arc<LoadedModel>, InferenceError> {
        let nodes = self
            .nodes
            .as_ref()
            .ok_or_else(|| InferenceError::Internal("this host runs no worker nodes".into()))?;
        let started = Instant::now();
        let (model, info) = nodes.open(spec, node).await?;
        let load_time = started.elapsed();
        tracing::info!(model = %spec.name, %node, secs = load_time.as_secs_f64(), "model loaded on its node");
        Ok(Arc::new(LoadedModel {
            spec: spec.clone(),
            model: Arc::new(model),
            info,
            load_time,
            loaded_at: chrono::Utc::now(),
            last_used: Mutex::new(Instant::now()),
        }))
    }

    /// Loaded models, most recently used first.
    pub fn loaded(&self) -> Vec<Arc<LoadedModel>> {
        let mut out: Vec<Arc<LoadedModel>> = self
            .lock()
            .values()
            .filter_map(|(_, cell)| cell.get().cloned())
            .collect();
        out.sort_by_key(|m| m.idle_for());
        out
    }

    /// Whether a model is held by anyone but the manager.
    fn in_use(model: &Arc<LoadedModel>) -> bool {
        // The manager's cell holds one reference and `loaded()` one more.
        Arc::strong_count(model) > 2
    }

    /// Evicts idle models, least recently used first, until `spec` fits.
    fn make_room(&self, spec: &LoadSpec) -> Result<(), InferenceError> {
        let needed = spec.file_bytes;
        loop {
            let loaded: Vec<Arc<LoadedModel>> = self
                .loaded()
                .into_iter()
                .filter(|m| m.spec.key != spec.key && m.spec.is_local())
                .collect();
            let used: u64 = loaded.iter().map(|m| m.memory_bytes()).sum();
            let over_memory =
                self.limits.memory_budget > 0 && used + needed > self.limits.memory_budget;
            let over_count = self.limits.max_loaded > 0 && loaded.len() >= self.limits.max_loaded;
            if !over_memory && !over_count {
                return Ok(());
            }
            let victim = loaded.iter().rev().find(|m| !Self::in_use(m)).cloned();
            let Some(victim) = victim else {
                return Err(InferenceError::Capacity(format!(
                    "no room to load `{}`: every loaded model is busy (memory budget {} MiB, {} loaded)",
                    spec.name,
                    self.limits.memory_budget / (1024 * 1024),
                    loaded.len()
                )));
            };
            tracing::info!(model = %victim.spec.name, "evicting the least recently used model");
            self.unload(&victim.spec.key);
        }
    }

    /// Forgets a model; it is freed once its running requests finish.
    pub fn unload(&self, key: &str) -> bool {
        self.lock().remove(key).is_some()
    }

    /// Unloads models idle longer than the limit; returns their names.
    pub fn unload_idle(&self) -> Vec<String> {
        let idle: Vec<Arc<LoadedModel>> = self
            .loaded()
            .into_iter()
            .filter(|m| m.idle_for() >= self.limits.idle_unload && !Self::in_use(m))
            .collect();
        idle.iter()
            .filter(|m| self.unload(&m.spec.key))
            .map(|m| m.spec.name.clone())
            .collect()
    }

    /// Starts a task that unloads idle models (see
    /// [`ModelManager::unload_idle`]) for as long as the runtime runs.
    pub fn spawn_idle_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let manager = self.clone();
        let period = sweep_period(self.limits.idle_unload);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for name in manager.unload_idle() {
                    tracing::info!(model = %name, "unloaded an idle model");
                }
            }
        })
    }
}

/// How often the idle sweeper looks: a quarter of the idle limit, so a
/// model goes at most a quarter late, between 1 s and 1 min.
pub fn sweep_period(idle_unload: Duration) -> Duration {
    (idle_unload / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// `message` with `path` shortened to its file name.
fn without_path(message: &str, path: &str) -> String {
    match std::path::Path::new(path).file_name() {
        Some(name) if !path.is_empty() => message.replace(path, &name.to_string_lossy()),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweeper_looks_often_enough_but_not_too_often() {
        assert_eq!(sweep_period(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            sweep_period(Duration::from_secs(20)),
            Duration::from_secs(5)
        );
        assert_eq!(
            sweep_period(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
    }
}
