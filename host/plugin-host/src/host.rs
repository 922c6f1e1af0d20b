//! [`PluginHost`]: installs, configures and removes plugins, keeps their
//! compiled form, and answers the generation service's [`Hooks`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use corral_hooks::{GenerationHooks, HookCaller, HookContext, Hooks, HostServices, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::call::invoke;
use crate::calls::{
    Call, Reply, RouteRequest, RouteResponse, CREDENTIAL_HEADERS, MAX_HEADER_BYTES,
    MAX_ROUTE_BODY_BYTES, MAX_ROUTE_HEADERS,
};
use crate::engine::{self, ComponentCache, Loaded};
use crate::error::PluginError;
use crate::generation::{GenerationRun, Refused};
use crate::manifest::{Capability, FailurePolicy, Hook, Manifest, MAX_KV_KB};
use crate::net::{HostPattern, HttpPolicy};
use crate::sandbox::PluginEnv;
use crate::stats::{ExportStats, Stats};
use crate::wit;

/// The runtime's own limits; a manifest may ask for less, never more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Where compiled components are cached (the host's data dir).
    pub cache_dir: PathBuf,
    /// The most linear memory a plugin may have, MiB.
    pub max_memory_mb: u32,
    /// The most time one call may take, ms (time waiting in host calls
    /// does not count).
    pub max_call_ms: u32,
    /// The most a call may take by the clock beyond its own time, ms: what
    /// it waits for in host calls (a model answering, the store), for the
    /// network or on its WASI clock. Past it the call is stopped as timed
    /// out, so no plugin holds a generation or an instance for ever.
    pub max_wait_ms: u32,
    /// Consecutive failures after which a plugin is turned off.
    pub failure_threshold: u32,
    /// Plugin instances alive at once (each generation or route request
    /// holds one per plugin that runs for it); the engine keeps a slot
    /// for each. A call that finds none free fails as "busy" without
    /// counting against the plugin.
    pub max_instances: u32,
}

impl RuntimeConfig {
    /// The defaults (256 MiB, 5000 ms, 150 s of waiting, 5 failures, 1000
    /// instances) with `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        RuntimeConfig {
            cache_dir: cache_dir.into(),
            max_memory_mb: 256,
            max_call_ms: 5000,
            max_wait_ms: 150_000,
            failure_threshold: 5,
            max_instances: 1000,
        }
    }
}

/// What a technician decided about an installed plugin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginSettings {
    /// Whether the plugin runs.
    pub enabled: bool,
    /// Capabilities approved; only those the manifest asks for count.
    pub approved: Vec<Capability>,
    /// Hosts approved for `http`, as the manifest spells them; only those
    /// it declares count.
    #[serde(default)]
    pub approved_hosts: Vec<String>,
    /// Whether `http` may reach loopback, link-local and private
    /// addresses (for a service on the technician's own network).
    #[serde(default)]
    pub private_network: bool,
    /// The models it runs for; `None`: all.
    pub models: Option<Vec<String>>,
    /// Users turn it on for themselves ([`HookContext::opted_in`]).
    pub optional: bool,
    /// Its configuration, checked against the manifest's schema.
    pub config: Value,
    /// Set when the runtime turned the plugin off after repeated failures
    /// (kept across restarts); a plugin with a reason does not run.
    pub disabled_reason: Option<String>,
}

/// What [`PluginHost::inspect`] found out about a plugin.
#[derive(Debug, Clone, Serialize)]
pub struct Inspected {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The SHA-256 of the component, hex.
    pub component_sha256: String,
    /// The interfaces the component imports.
    pub imports: Vec<String>,
    /// Configuration fields that are secret.
    pub secret_fields: Vec<String>,
    /// `false` when the compiled component came from the cache.
    pub compiled: bool,
}

/// Limits in force for a plugin: its manifest's, capped by the runtime's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EffectiveLimits {
    /// Linear memory, MiB.
    pub memory_mb: u32,
    /// Time per call, ms.
    pub time_ms: u32,
    /// Key-value quota, KiB.
    pub kv_kb: u32,
}

/// An installed plugin as the host shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The SHA-256 of the component, hex.
    pub component_sha256: String,
    /// A technician's switch.
    pub enabled: bool,
    /// Users turn it on for themselves.
    pub optional: bool,
    /// The models it runs for; `None`: all.
    pub models: Option<Vec<String>>,
    /// Capabilities it asked for and a technician approved.
    pub granted: Vec<Capability>,
    /// Capabilities it asked for that are not approved.
    pub not_granted: Vec<Capability>,
    /// Declared hosts a technician approved (they count once `http` is
    /// granted).
    pub approved_hosts: Vec<HostPattern>,
    /// Whether `http` may reach non-public addresses.
    pub private_network: bool,
    /// Its configuration with defaults filled in (secrets included: the
    /// caller hides [`PluginStatus::secret_fields`]).
    pub config: Value,
    /// Configuration fields that are secret.
    pub secret_fields: Vec<String>,
    /// Limits in force.
    pub limits: EffectiveLimits,
    /// Whether it runs now (enabled and not turned off).
    pub active: bool,
    /// Why it is turned off, when the runtime turned it off.
    pub disabled_reason: Option<String>,
    /// Failures since its last success.
    pub consecutive_failures: u32,
    /// The last failure, as `export: what happened`.
    pub last_error: Option<String>,
    /// Calls and times per export.
    pub stats: Vec<ExportStats>,
}

/// Failure counting of one plugin, kept across configuration changes.
pub(crate) struct Health {
    disabled: AtomicBool,
    state: Mutex<HealthState>,
    pub(crate) stats: Stats,
}

#[derive(Default)]
struct HealthState {
    disabled_reason: Option<String>,
    consecutive: u32,
    last_error: Option<String>,
}

impl Health {
    fn new(disabled_reason: Option<String>) -> Self {
        Health {
            disabled: AtomicBool::new(disabled_reason.is_some()),
            state: Mutex::new(HealthState {
                disabled_reason,
                ..Default::default()
            }),
            stats: Stats::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    fn set_disabled(&self, reason: Option<String>) {
        let mut s = self.lock();
        self.disabled.store(reason.is_some(), Ordering::Relaxed);
        s.disabled_reason = reason;
        s.consecutive = 0;
    }

    pub(crate) fn succeeded(&self) {
        let mut s = self.lock();
        s.consecutive = 0;
    }

    /// Counts a failure; returns the reason when this one turned the
    /// plugin off.
    pub(crate) fn failed(&self, message: String, threshold: u32) -> Option<String> {
        let mut s = self.lock();
        s.consecutive += 1;
        s.last_error = Some(message.clone());
        if s.consecutive >= threshold.max(1) && s.disabled_reason.is_none() {
            let reason = format!("failed {} times in a row; last: {message}", s.consecutive);
            s.disabled_reason = Some(reason.clone());
            self.disabled.store(true, Ordering::Relaxed);
            return Some(reason);
        }
        None
    }
}

/// An installed plugin: its manifest, its linked component and settings.
pub(crate) struct Installed {
    pub(crate) manifest: Arc<Manifest>,
    component_sha256: String,
    cache_key: String,
    pub(crate) pre: Arc<wit::Pre>,
    pub(crate) env: Arc<PluginEnv>,
    settings: PluginSettings,
    /// Of the declared hosts, those approved.
    approved_hosts: Vec<HostPattern>,
    limits: EffectiveLimits,
    pub(crate) health: Arc<Health>,
    pub(crate) spare: crate::call::Spare,
}

/// Whether a plugin with `settings` is chosen for a generation with `ctx`
/// by the model it names and the caller's choice of optional plugins.
fn chosen_for(id: &str, settings: &PluginSettings, ctx: &HookContext) -> bool {
    settings
        .models
        .as_ref()
        .is_none_or(|models| models.iter().any(|m| m == &ctx.model))
        && (!settings.optional || ctx.opted_in.iter().any(|opted| opted == id))
}

impl Installed {
    /// Whether it runs for a generation with `ctx`. A `fail-closed` plugin
    /// the host turned off still takes part: it refuses the generation
    /// without being called, so turning it off never lets through what it
    /// guards.
    fn applies_to(&self, ctx: &HookContext) -> bool {
        (self.failure_policy() == FailurePolicy::FailClosed || !self.health.is_disabled())
            && chosen_for(&self.manifest.id, &self.settings, ctx)
    }

    pub(crate) fn failure_policy(&self) -> FailurePolicy {
        self.manifest.failure
    }

    fn status(&self) -> PluginStatus {
        let (granted, not_granted) = self
            .manifest
            .capabilities
            .iter()
            .partition(|c| self.env.is_granted(**c));
        let health = self.health.lock();
        PluginStatus {
            manifest: (*self.manifest).clone(),
            component_sha256: self.component_sha256.clone(),
            enabled: self.settings.enabled,
            optional: self.settings.optional,
            models: self.settings.models.clone(),
            granted,
            not_granted,
            approved_hosts: self.approved_hosts.clone(),
            private_network: self.settings.private_network,
            config: Value::Object(self.env.config.clone()),
            secret_fields: self.manifest.secret_fields(),
            limits: self.limits,
            active: self.settings.enabled && health.disabled_reason.is_none(),
            disabled_reason: health.disabled_reason.clone(),
            consecutive_failures: health.consecutive,
            last_error: health.last_error.clone(),
            stats: self.health.stats.snapshot(),
        }
    }
}

/// The plugin runtime. Cheap to clone and share; every clone is the same
/// runtime.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: wasmtime::Engine,
    linkers: wit::Linkers,
    cache: ComponentCache,
    pub(crate) config: RuntimeConfig,
    pub(crate) services: Arc<dyn HostServices>,
    plugins: RwLock<BTreeMap<String, Arc<Installed>>>,
    /// Enabled plugins with at least one hook, in the order they run.
    running: RwLock<Arc<[Arc<Installed>]>>,
    /// Plugins kept without a component (it could not be loaded) that
    /// guard generations: `fail-closed`, with hooks. By id.
    unloaded: RwLock<BTreeMap<String, PluginSettings>>,
    any_optional: AtomicBool,
}

struct Checked {
    manifest: Manifest,
    api: &'static str,
    component_sha256: String,
    loaded: Loaded,
    imports: Vec<String>,
}

impl PluginHost {
    /// Starts the engine (and its epoch ticker thread) and opens the
    /// compile cache under `cfg.cache_dir`.
    pub fn new(cfg: RuntimeConfig, services: Arc<dyn HostServices>) -> anyhow::Result<Self> {
        let engine = engine::new_engine(cfg.max_instances, cfg.max_memory_mb)?;
        engine::start_ticker(&engine)?;
        let cache = ComponentCache::new(&engine, cfg.cache_dir.clone()).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the plugin cache {}: {e}",
                cfg.cache_dir.display()
            )
        })?;
        let linkers = wit::Linkers::new(&engine)?;
        Ok(PluginHost {
            inner: Arc::new(Inner {
                engine,
                linkers,
                cache,
                config: cfg,
                services,
                plugins: RwLock::new(BTreeMap::new()),
                running: RwLock::new(Arc::from(Vec::new())),
                unloaded: RwLock::new(BTreeMap::new()),
                any_optional: AtomicBool::new(false),
            }),
        })
    }

    /// The `corral:plugin` versions this runtime runs.
    pub fn supported_apis(&self) -> &'static [&'static str] {
        wit::SUPPORTED_APIS
    }

    /// How many components were compiled (not read from the cache) since
    /// the runtime started.
    pub fn compilations(&self) -> u64 {
        self.inner.cache.compilations()
    }

    fn check(&self, manifest_toml: &str, component: &[u8]) -> Result<Checked, PluginError> {
        let manifest = Manifest::parse(manifest_toml)?;
        let component_sha256 = engine::sha256_hex(component);
        let inner = &self.inner;
        let loaded = inner
            .cache
            .load(&inner.engine, component, &component_sha256)?;
        let api = wit::check_version(&manifest, &inner.engine, &loaded.component)?;
        let imports = wit::check_imports(&manifest, api, &inner.engine, &loaded.component)?;
        Ok(Checked {
            manifest,
            api,
            component_sha256,
            loaded,
            imports,
        })
    }

    /// Checks a manifest and component without installing them: parses
    /// the manifest, checks the WIT version and the imports against the
    /// capabilities, and compiles (or finds in the cache) the component.
    /// Compiling takes up to seconds of CPU: call it (and
    /// [`PluginHost::install`]) from a blocking task.
    pub fn inspect(&self, manifest_toml: &str, component: &[u8]) -> Result<Inspected, PluginError> {
        let c = self.check(manifest_toml, component)?;
        wit::Pre::new(c.api, &self.inner.linkers, &c.loaded.component)?;
        Ok(Inspected {
            secret_fields: c.manifest.secret_fields(),
            manifest: c.manifest,
            component_sha256: c.component_sha256,
            imports: c.imports,
            compiled: c.loaded.compiled,
        })
    }

    /// Installs a plugin, or replaces the one with the same id (an
    /// upgrade: its counters start again).
    pub fn install(
        &self,
        manifest_toml: &str,
        component: &[u8],
        settings: PluginSettings,
    ) -> Result<PluginStatus, PluginError> {
        let c = self.check(manifest_toml, component)?;
        let pre = Arc::new(wit::Pre::new(
            c.api,
            &self.inner.linkers,
            &c.loaded.component,
        )?);
        let health = Arc::new(Health::new(settings.disabled_reason.clone()));
        let installed = self.build(
            Arc::new(c.manifest),
            c.component_sha256,
            c.loaded.cache_key,
            pre,
            health,
            settings,
        )?;
        let status = installed.status();
        let old = self.write().insert(status.manifest.id.clone(), installed);
        if let Some(old) = old {
            self.forget_artefact(&old);
        }
        self.unloaded().remove(&status.manifest.id);
        self.refresh();
        tracing::info!(
            plugin = %status.manifest.id,
            version = %status.manifest.version,
            "plugin installed"
        );
        Ok(status)
    }

    /// Changes a plugin's settings; its compiled component and counters
    /// stay. Clearing `disabled_reason` turns a plugin the runtime had
    /// turned off back on.
    pub fn configure(
        &self,
        id: &str,
        settings: PluginSettings,
    ) -> Result<PluginStatus, PluginError> {
        let mut plugins = self.write();
        let old = plugins
            .get(id)
            .cloned()
            .ok_or_else(|| PluginError::NotFound(id.to_string()))?;
        let installed = self.build(
            old.manifest.clone(),
            old.component_sha256.clone(),
            old.cache_key.clone(),
            old.pre.clone(),
            old.health.clone(),
            settings,
        )?;
        installed
            .health
            .set_disabled(installed.settings.disabled_reason.clone());
        let status = installed.status();
        plugins.insert(id.to_string(), installed);
        drop(plugins);
        self.refresh();
        Ok(status)
    }

    fn build(
        &self,
        manifest: Arc<Manifest>,
        component_sha256: String,
        cache_key: String,
        pre: Arc<wit::Pre>,
        health: Arc<Health>,
        mut settings: PluginSettings,
    ) -> Result<Arc<Installed>, PluginError> {
        let config = manifest
            .config
            .apply(&settings.config, settings.enabled)
            .map_err(PluginError::InvalidConfig)?;
        settings.approved.sort();
        settings.approved.dedup();
        let granted: Vec<Capability> = settings
            .approved
            .iter()
            .copied()
            .filter(|c| manifest.requests(*c))
            .collect();
        let approved_hosts: Vec<HostPattern> = manifest
            .http_hosts
            .iter()
            .filter(|h| {
                settings
                    .approved_hosts
                    .iter()
                    .any(|a| HostPattern::parse(a).as_ref() == Ok(*h))
            })
            .cloned()
            .collect();
        let http = granted.contains(&Capability::Http).then(|| {
            Arc::new(HttpPolicy {
                hosts: approved_hosts.clone(),
                private_network: settings.private_network,
            })
        });
        let cfg = &self.inner.config;
        let limits = EffectiveLimits {
            memory_mb: manifest.limits.memory_mb.min(cfg.max_memory_mb),
            time_ms: manifest.limits.time_ms.min(cfg.max_call_ms),
            kv_kb: manifest.limits.kv_kb.min(MAX_KV_KB),
        };
        let env = Arc::new(PluginEnv::new(
            &manifest.id,
            &granted,
            config,
            u64::from(limits.kv_kb) * 1024,
            (limits.memory_mb as usize) << 20,
            Duration::from_millis(limits.time_ms.into()),
            http,
        ));
        Ok(Arc::new(Installed {
            approved_hosts,
            manifest,
            component_sha256,
            cache_key,
            pre,
            env,
            settings,
            limits,
            health,
            spare: Default::default(),
        }))
    }

    /// Keeps a plugin whose component cannot be loaded (its file is gone,
    /// or this runtime no longer runs its interface) in the place of the
    /// one loaded, if any. Nothing of it runs. A `fail-closed` plugin with
    /// hooks that `settings` keep on refuses every generation it would
    /// have run for, so a guard that cannot load never fails open; the
    /// technician turns it off, fixes or removes it. Returns whether it
    /// refuses.
    pub fn keep_unloaded(&self, id: &str, manifest_toml: &str, settings: PluginSettings) -> bool {
        let old = self.write().remove(id);
        if let Some(old) = old {
            self.forget_artefact(&old);
        }
        let guards = settings.enabled && Manifest::guards_generations(manifest_toml);
        if guards {
            self.unloaded().insert(id.to_string(), settings);
        } else {
            self.unloaded().remove(id);
        }
        self.refresh();
        guards
    }

    /// Removes a plugin; `false` when none had that id.
    pub fn remove(&self, id: &str) -> bool {
        let held = self.unloaded().remove(id).is_some();
        let old = self.write().remove(id);
        if let Some(old) = &old {
            self.forget_artefact(old);
        }
        if old.is_some() || held {
            self.refresh();
            tracing::info!(plugin = %id, "plugin removed");
        }
        old.is_some() || held
    }

    /// One plugin's status.
    pub fn status(&self, id: &str) -> Option<PluginStatus> {
        self.read().get(id).map(|p| p.status())
    }

    /// Every plugin's status, by id.
    pub fn list(&self) -> Vec<PluginStatus> {
        self.read().values().map(|p| p.status()).collect()
    }

    /// Serves a request to one of a plugin's routes in a fresh instance.
    /// A path no route of the manifest matches gets
    /// [`PluginError::RouteNotFound`] without calling the plugin.
    pub async fn handle_route(
        &self,
        id: &str,
        caller: &HookCaller,
        mut req: RouteRequest,
    ) -> Result<RouteResponse, PluginError> {
        let plugin = self
            .read()
            .get(id)
            .cloned()
            .ok_or_else(|| PluginError::NotFound(id.to_string()))?;
        if !plugin.settings.enabled {
            return Err(PluginError::Disabled {
                plugin: id.to_string(),
                reason: "a technician turned it off".into(),
            });
        }
        if plugin.health.is_disabled() {
            let reason = plugin
                .health
                .lock()
                .disabled_reason
                .clone()
                .unwrap_or_default();
            return Err(PluginError::Disabled {
                plugin: id.to_string(),
                reason,
            });
        }
        let path = req.path.strip_prefix('/').unwrap_or(&req.path).to_string();
        req.path = path;
        if !plugin
            .manifest
            .routes
            .iter()
            .any(|r| r.matches(&req.method, &req.path))
        {
            return Err(PluginError::RouteNotFound {
                plugin: id.to_string(),
                method: req.method,
                path: req.path,
            });
        }
        if req.body.len() > MAX_ROUTE_BODY_BYTES {
            return Err(PluginError::PayloadTooLarge(format!(
                "the request body is larger than {} MiB",
                MAX_ROUTE_BODY_BYTES >> 20
            )));
        }
        req.headers
            .retain(|(name, _)| !CREDENTIAL_HEADERS.contains(&name.to_ascii_lowercase().as_str()));
        if req.headers.len() > MAX_ROUTE_HEADERS
            || req
                .headers
                .iter()
                .any(|(n, v)| n.len() + v.len() > MAX_HEADER_BYTES)
            || req.path.len() + req.query.len() > 8192
        {
            return Err(PluginError::PayloadTooLarge(
                "the request's headers or address are too large".into(),
            ));
        }
        let mut live = None;
        let reply = invoke(
            &self.inner,
            &plugin,
            &mut live,
            caller,
            None,
            Call::Handle(&req, caller),
        )
        .await
        .map_err(|f| PluginError::PluginFailed {
            plugin: id.to_string(),
            reason: f.to_string(),
        })?;
        match reply {
            Reply::Response(r) => Ok(r),
            other => Err(PluginError::Internal(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Installed>>> {
        self.inner.plugins.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Installed>>> {
        self.inner
            .plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn unloaded(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, PluginSettings>> {
        self.inner
            .unloaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The refusal of a generation with `ctx` by the first plugin kept
    /// without its component that guards it, if any.
    fn refused_unloaded(&self, ctx: &HookContext) -> Option<Rejection> {
        let unloaded = self
            .inner
            .unloaded
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let (id, _) = unloaded
            .iter()
            .find(|(id, settings)| chosen_for(id, settings, ctx))?;
        Some(Rejection {
            plugin: id.clone(),
            reason: "the plugin cannot be loaded; it refuses generations until a technician \
                     fixes or removes it"
                .into(),
        })
    }

    fn forget_artefact(&self, old: &Installed) {
        let still_used = self.read().values().any(|p| p.cache_key == old.cache_key);
        if !still_used {
            self.inner.cache.forget(&old.cache_key);
        }
    }

    /// Rebuilds the list of plugins that run, in priority order.
    fn refresh(&self) {
        let mut running: Vec<Arc<Installed>> = self
            .read()
            .values()
            .filter(|p| p.settings.enabled && Hook::ALL.iter().any(|h| p.manifest.has_hook(*h)))
            .cloned()
            .collect();
        running.sort_by(|a, b| {
            (a.manifest.priority, &a.manifest.id).cmp(&(b.manifest.priority, &b.manifest.id))
        });
        let any_optional = running.iter().any(|p| p.settings.optional)
            || self
                .inner
                .unloaded
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .any(|settings| settings.optional);
        for plugin in &running {
            plugin.spare.refill(&self.inner, plugin);
        }
        *self
            .inner
            .running
            .write()
            .unwrap_or_else(|p| p.into_inner()) = running.into();
        self.inner
            .any_optional
            .store(any_optional, Ordering::Relaxed);
    }
}

#[async_trait]
impl Hooks for PluginHost {
    async fn begin(&self, ctx: &HookContext) -> Option<Box<dyn GenerationHooks>> {
        if let Some(rejection) = self.refused_unloaded(ctx) {
            return Some(Box::new(Refused(rejection)));
        }
        let running = self
            .inner
            .running
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if running.is_empty() {
            return None;
        }
        let chosen: Vec<Arc<Installed>> = running
            .iter()
            .filter(|p| p.applies_to(ctx))
            .cloned()
            .collect();
        if chosen.is_empty() {
            return None;
        }
        Some(Box::new(GenerationRun::new(
            self.inner.clone(),
            ctx.clone(),
            chosen,
        )))
    }

    fn uses_opt_ins(&self) -> bool {
        self.inner.any_optional.load(Ordering::Relaxed)
    }
}
