//! Plugins as the host keeps them: a record per plugin in the store, its
//! component in the data dir, the runtime that runs them, and what the
//! host lends plugins ([`Bridge`]: their key-value data, models).
//!
//! Technicians install, approve, configure, enable, upgrade and delete
//! plugins; the runtime only ever sees what the records say. Every change
//! is written to the store first and then applied to the runtime, so a
//! restart comes back to the same plugins.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use corral_hooks::{ChatMessage, HookCaller, HostServices, KvScope, SamplingChange, Surface};
use corral_plugin_host::{
    Capability, HostPattern, Inspected, Manifest, PluginError, PluginHost, PluginSettings,
    PluginStatus, RuntimeConfig,
};
use sha2::{Digest, Sha256};

use crate::error::{ApiResult, AppError};
use crate::generation::{self, Event};
use crate::inference::Prompt;
use crate::model::{ModelKind, PluginRecord, SamplingOverrides, User};
use crate::state::AppState;
use crate::store::{PluginUpdate, StoreError};
use crate::time::now;

/// Where plugin components and their compiled forms live.
pub fn plugins_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("plugins")
}

fn component_path(data_dir: &Path, sha256: &str) -> PathBuf {
    plugins_dir(data_dir).join(format!("{sha256}.wasm"))
}

/// The runtime, set up with the host's services; the state is handed to
/// the bridge once it exists.
pub fn runtime(data_dir: &Path) -> anyhow::Result<(Arc<PluginHost>, Arc<Bridge>)> {
    let bridge = Arc::new(Bridge::default());
    let dir = plugins_dir(data_dir);
    create_private_dir(&dir)?;
    let host = PluginHost::new(RuntimeConfig::new(dir.join("compiled")), bridge.clone())?;
    Ok((Arc::new(host), bridge))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Loads every stored plugin into the runtime. A plugin that no longer
/// loads (its file gone, the host no longer supports its interface) is
/// kept, turned off, with the reason, and a `fail-closed` one refuses the
/// generations it guards; the host starts either way.
pub async fn load_all(state: &AppState) -> anyhow::Result<usize> {
    let mut loaded = 0;
    for record in state.store.list_plugins().await? {
        match load_one(state, &record).await {
            Ok(_) => loaded += 1,
            Err(reason) => {
                keep_unloaded(state, &record, reason).await?;
            }
        }
    }
    Ok(loaded)
}

/// A plugin whose component did not load: the reason is saved for
/// technicians to see, and the runtime keeps it in the place of its
/// component, so that a `fail-closed` one that its settings keep on goes
/// on refusing the generations it guards.
async fn keep_unloaded(
    state: &AppState,
    record: &PluginRecord,
    reason: String,
) -> Result<PluginRecord, StoreError> {
    tracing::warn!(plugin = %record.id, %reason, "a plugin could not be loaded");
    let refuses = state
        .plugins
        .keep_unloaded(&record.id, &record.manifest, settings_of(record));
    if refuses {
        tracing::warn!(
            plugin = %record.id,
            "the plugin is fail-closed: generations it applies to are refused until it is \
             turned off, fixed or removed"
        );
    }
    if record.disabled_reason.as_deref() == Some(reason.as_str()) {
        return Ok(record.clone());
    }
    let off = PluginUpdate {
        disabled_reason: Some(Some(reason)),
        updated_at: Some(now()),
        ..Default::default()
    };
    state.store.update_plugin(&record.id, &off).await
}

async fn load_one(state: &AppState, record: &PluginRecord) -> Result<PluginStatus, String> {
    let path = component_path(&state.config.data_dir, &record.component_sha256);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| format!("its component cannot be read: {e}"))?;
    let plugins = state.plugins.clone();
    let manifest = record.manifest.clone();
    let settings = settings_of(record);
    tokio::task::spawn_blocking(move || plugins.install(&manifest, &bytes, settings))
        .await
        .map_err(|e| format!("loading failed: {e}"))?
        .map_err(|e| e.to_string())
}

/// The runtime's settings of a stored plugin.
pub fn settings_of(record: &PluginRecord) -> PluginSettings {
    PluginSettings {
        enabled: record.enabled,
        approved: record
            .approved
            .iter()
            .filter_map(|c| c.parse::<Capability>().ok())
            .collect(),
        approved_hosts: record.approved_hosts.clone(),
        private_network: record.private_network,
        models: record.models.clone(),
        optional: record.optional,
        config: record.config.clone(),
        disabled_reason: record.disabled_reason.clone(),
    }
}

/// A runtime error as the API answers it.
pub fn plugin_error(err: PluginError) -> AppError {
    AppError::Plugin {
        status: axum::http::StatusCode::from_u16(err.http_status())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
        code: err.code(),
        message: err.to_string(),
    }
}

/// A stored manifest, parsed (it was checked when it was stored).
fn manifest_of(record: &PluginRecord) -> ApiResult<Manifest> {
    Manifest::parse(&record.manifest).map_err(|e| plugin_error(e.into()))
}

/// `config` checked against the manifest's schema, defaults filled in.
/// With `require`, required fields must be set (to turn the plugin on).
fn checked_config(
    manifest: &Manifest,
    config: &serde_json::Value,
    require: bool,
) -> Result<serde_json::Value, String> {
    manifest
        .config
        .apply(config, require)
        .map(serde_json::Value::Object)
        .map_err(|problems| problems.join("; "))
}

/// Checks and installs a new plugin (off, nothing approved): its record,
/// its component file, the runtime. A plugin of the same id is a conflict
/// (upgrade it instead).
pub async fn install(
    state: &AppState,
    actor: &User,
    manifest: String,
    component: Vec<u8>,
) -> ApiResult<PluginRecord> {
    let (inspected, component) = inspect(state, manifest.clone(), component).await?;
    let id = inspected.manifest.id.clone();
    // Defaults where the schema has them; required fields wait for the
    // technician (the plugin cannot be turned on before).
    let config = checked_config(&inspected.manifest, &serde_json::json!({}), false)
        .unwrap_or_else(|_| serde_json::json!({}));
    if state.store.get_plugin(&id).await?.is_some() {
        return Err(AppError::Conflict(format!(
            "plugin `{id}` is already installed; upgrade it with PUT /api/plugins/{id}/component"
        )));
    }
    let sha256 = write_component(&state.config.data_dir, &component).await?;
    let at = now();
    let record = PluginRecord {
        id,
        manifest,
        component_sha256: sha256,
        enabled: false,
        optional: false,
        approved: Vec::new(),
        approved_hosts: Vec::new(),
        private_network: false,
        models: None,
        config,
        disabled_reason: None,
        installed_by: actor.id.clone(),
        installed_at: at,
        updated_at: at,
    };
    state.store.put_plugin(&record).await?;
    apply(state, record).await
}

/// Replaces a plugin's component and manifest, keeping its settings,
/// configuration and data. Approvals of capabilities the new version no
/// longer asks for are dropped; the configuration must fit its schema.
pub async fn upgrade(
    state: &AppState,
    id: &str,
    manifest: String,
    component: Vec<u8>,
) -> ApiResult<PluginRecord> {
    let mut record = get(state, id).await?;
    let (inspected, component) = inspect(state, manifest.clone(), component).await?;
    if inspected.manifest.id != record.id {
        return Err(AppError::field(
            "manifest",
            format!(
                "is for plugin `{}`, not `{}`",
                inspected.manifest.id, record.id
            ),
        ));
    }
    // A value saved as a secret stays one: a version that declares the
    // field as plain text would show it, so the value is dropped instead.
    // When the old manifest no longer reads, only fields secret now stay.
    let was_secret = corral_plugin_host::Manifest::parse(&record.manifest)
        .ok()
        .map(|m| m.secret_fields());
    let now_secret = inspected.manifest.secret_fields();
    let mut saved = record.config.clone();
    if let Some(fields) = saved.as_object_mut() {
        fields.retain(|name, _| match &was_secret {
            Some(was) => !was.contains(name) || now_secret.contains(name),
            None => now_secret.contains(name),
        });
    }
    let config = checked_config(&inspected.manifest, &saved, false).map_err(|problems| {
        AppError::BadRequest(format!(
            "the saved configuration does not fit the new version: {problems}; change it first"
        ))
    })?;
    let old_sha = record.component_sha256.clone();
    let sha256 = write_component(&state.config.data_dir, &component).await?;
    let mut approved = record.approved.clone();
    approved.retain(|c| {
        c.parse::<Capability>()
            .is_ok_and(|c| inspected.manifest.requests(c))
    });
    // Hosts stay approved while the new version still declares them.
    let mut approved_hosts = record.approved_hosts.clone();
    approved_hosts.retain(|h| {
        HostPattern::parse(h).is_ok_and(|h| inspected.manifest.http_hosts.contains(&h))
    });
    let changes = PluginUpdate {
        manifest: Some((manifest, sha256)),
        approved: Some(approved),
        approved_hosts: Some(approved_hosts),
        config: Some(config),
        updated_at: Some(now()),
        ..Default::default()
    };
    record = state.store.update_plugin(id, &changes).await?;
    record = apply(state, record).await?;
    forget_component(state, &old_sha).await;
    Ok(record)
}

/// Changes to a plugin's settings; `None` keeps one as it is.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub enabled: Option<bool>,
    pub optional: Option<bool>,
    pub models: Option<Option<Vec<String>>>,
    pub approved: Option<Vec<String>>,
    pub approved_hosts: Option<Vec<String>>,
    pub private_network: Option<bool>,
}

/// Applies `changes`. Only capabilities the manifest asks for and hosts
/// it declares can be approved; turning a plugin on clears why it was
/// turned off.
pub async fn update(state: &AppState, id: &str, changes: Changes) -> ApiResult<PluginRecord> {
    let record = get(state, id).await?;
    let manifest = match manifest_of(&record) {
        Ok(manifest) => manifest,
        // A manifest this version no longer reads (its plugin cannot load
        // and may be refusing generations): it can still be turned off.
        Err(_) if is_turning_off(&changes) => {
            let update = PluginUpdate {
                enabled: Some(false),
                updated_at: Some(now()),
                ..Default::default()
            };
            let record = state.store.update_plugin(id, &update).await?;
            return apply(state, record).await;
        }
        Err(e) => return Err(e),
    };
    let mut update = PluginUpdate {
        enabled: changes.enabled,
        optional: changes.optional,
        models: changes.models,
        private_network: changes.private_network,
        updated_at: Some(now()),
        ..Default::default()
    };
    if let Some(hosts) = changes.approved_hosts {
        let mut approved = Vec::new();
        for text in &hosts {
            let host =
                HostPattern::parse(text).map_err(|e| AppError::field("approved_hosts", e))?;
            if !manifest.http_hosts.contains(&host) {
                return Err(AppError::field(
                    "approved_hosts",
                    format!("plugin `{id}` does not declare host `{text}` under `[http] hosts`"),
                ));
            }
            approved.push(host.to_string());
        }
        approved.sort();
        approved.dedup();
        update.approved_hosts = Some(approved);
    }
    if let Some(mut approved) = changes.approved {
        if let Some(other) = approved
            .iter()
            .find(|c| !c.parse::<Capability>().is_ok_and(|c| manifest.requests(c)))
        {
            return Err(AppError::field(
                "approved",
                format!("plugin `{id}` does not ask for capability `{other}`"),
            ));
        }
        approved.sort();
        approved.dedup();
        update.approved = Some(approved);
    }
    if changes.enabled == Some(true) {
        // Its configuration must be complete before it runs.
        checked_config(&manifest, &record.config, true).map_err(|problems| {
            AppError::BadRequest(format!(
                "configure plugin `{id}` before turning it on: {problems}"
            ))
        })?;
        update.disabled_reason = Some(None);
    }
    let record = state.store.update_plugin(id, &update).await?;
    apply(state, record).await
}

/// Whether `changes` only turn a plugin off.
fn is_turning_off(changes: &Changes) -> bool {
    let Changes {
        enabled,
        optional,
        models,
        approved,
        approved_hosts,
        private_network,
    } = changes;
    *enabled == Some(false)
        && optional.is_none()
        && models.is_none()
        && approved.is_none()
        && approved_hosts.is_none()
        && private_network.is_none()
}

/// Saves a plugin's configuration after checking it against the
/// manifest's schema. A secret field sent as `null` or left out keeps
/// its saved value.
pub async fn configure(
    state: &AppState,
    id: &str,
    mut config: serde_json::Value,
) -> ApiResult<PluginRecord> {
    let record = get(state, id).await?;
    let manifest = manifest_of(&record)?;
    let secrets = manifest.secret_fields();
    if let (Some(new), Some(old)) = (config.as_object_mut(), record.config.as_object()) {
        for field in &secrets {
            let keep = new.get(field).is_none_or(serde_json::Value::is_null);
            if keep {
                match old.get(field) {
                    Some(saved) => {
                        new.insert(field.clone(), saved.clone());
                    }
                    None => {
                        new.remove(field);
                    }
                }
            }
        }
    }
    let config = checked_config(&manifest, &config, false)
        .map_err(|problems| AppError::field("config", problems))?;
    let update = PluginUpdate {
        config: Some(config),
        updated_at: Some(now()),
        ..Default::default()
    };
    let record = state.store.update_plugin(id, &update).await?;
    apply(state, record).await
}

/// Removes a plugin with its data and its users' choices.
pub async fn delete(state: &AppState, id: &str) -> ApiResult<()> {
    let record = get(state, id).await?;
    state.plugins.remove(id);
    state.store.delete_plugin(id).await?;
    forget_component(state, &record.component_sha256).await;
    Ok(())
}

/// The stored record of plugin `id`.
pub async fn get(state: &AppState, id: &str) -> ApiResult<PluginRecord> {
    state
        .store
        .get_plugin(id)
        .await?
        .ok_or(AppError::NotFound("plugin"))
}

/// Plugin `id`, when its routes answer: it is on and the host has not
/// turned it off (everyone signed in may call them; the plugin decides
/// what the caller may do).
pub async fn routable(state: &AppState, id: &str) -> ApiResult<PluginRecord> {
    match state.store.get_plugin(id).await? {
        Some(record) if record.enabled && record.disabled_reason.is_none() => Ok(record),
        _ => Err(AppError::NotFound("plugin")),
    }
}

/// Optional plugins a user may turn on, with whether they did.
pub async fn optional_for(state: &AppState, user: &User) -> ApiResult<Vec<(PluginRecord, bool)>> {
    let mine = state.store.list_user_plugins(&user.id).await?;
    Ok(state
        .store
        .list_plugins()
        .await?
        .into_iter()
        .filter(|p| p.enabled && p.optional)
        .map(|p| {
            let on = mine.contains(&p.id);
            (p, on)
        })
        .collect())
}

/// Turns an optional plugin on or off for `user`.
pub async fn choose(state: &AppState, user: &User, id: &str, on: bool) -> ApiResult<()> {
    match state.store.get_plugin(id).await? {
        Some(p) if p.enabled && p.optional => {}
        _ => return Err(AppError::NotFound("plugin")),
    }
    state.store.set_user_plugin(&user.id, id, on).await?;
    Ok(())
}

async fn inspect(
    state: &AppState,
    manifest: String,
    component: Vec<u8>,
) -> ApiResult<(Inspected, Vec<u8>)> {
    let plugins = state.plugins.clone();
    // Compiling takes a while: off the async threads.
    tokio::task::spawn_blocking(move || {
        let inspected = plugins.inspect(&manifest, &component);
        inspected.map(|i| (i, component))
    })
    .await
    .map_err(|e| AppError::Internal(anyhow::anyhow!("inspecting a plugin failed: {e}")))?
    .map_err(plugin_error)
}

/// Tells the runtime what the record now says, and returns the record as
/// stored after it. New settings of a loaded plugin keep its compiled
/// component and its counters; a new component or manifest loads it again.
async fn apply(state: &AppState, record: PluginRecord) -> ApiResult<PluginRecord> {
    let loaded = state.plugins.status(&record.id).is_some_and(|s| {
        s.component_sha256 == record.component_sha256
            && Manifest::parse(&record.manifest).is_ok_and(|m| m == s.manifest)
    });
    if loaded {
        state
            .plugins
            .configure(&record.id, settings_of(&record))
            .map_err(plugin_error)?;
        return Ok(record);
    }
    match load_one(state, &record).await {
        Ok(_) => Ok(record),
        Err(reason) => {
            let record = keep_unloaded(state, &record, reason.clone()).await?;
            if record.enabled {
                Err(AppError::Unavailable(format!(
                    "plugin `{}`: {reason}",
                    record.id
                )))
            } else {
                // Off is what was asked for; the reason stays to be seen.
                Ok(record)
            }
        }
    }
}

/// Stores a component under its hash (once) and returns the hash.
async fn write_component(data_dir: &Path, component: &[u8]) -> ApiResult<String> {
    let sha256 = hex(&Sha256::digest(component));
    let path = component_path(data_dir, &sha256);
    if tokio::fs::metadata(&path).await.is_err() {
        let tmp = path.with_extension("wasm.part");
        let bytes = component.to_vec();
        let (tmp2, path2) = (tmp.clone(), path.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp2)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp2, &path2)
        })
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("storing a component failed: {e}")))?
        .map_err(|e| AppError::Internal(anyhow::anyhow!("storing a component failed: {e}")))?;
    }
    Ok(sha256)
}

/// Deletes a component file no plugin uses any more.
async fn forget_component(state: &AppState, sha256: &str) {
    let in_use = match state.store.list_plugins().await {
        Ok(all) => all.iter().any(|p| p.component_sha256 == sha256),
        Err(_) => true,
    };
    if !in_use {
        let _ = tokio::fs::remove_file(component_path(&state.config.data_dir, sha256)).await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the host lends plugins, over its store and models. Set up before
/// the state exists (the runtime is part of it) and handed the state
/// right after.
#[derive(Default)]
pub struct Bridge {
    state: OnceLock<AppState>,
}

impl Bridge {
    pub fn connect(&self, state: AppState) {
        let _ = self.state.set(state);
    }

    fn state(&self) -> Result<&AppState, String> {
        self.state
            .get()
            .ok_or_else(|| "the host is still starting".to_owned())
    }

    /// The caller's account as it is now (a disabled one may do nothing).
    async fn user(&self, caller: &HookCaller) -> Result<User, String> {
        let state = self.state()?;
        match state.store.get_user(&caller.user_id).await {
            Ok(Some(user)) if !user.disabled => Ok(user),
            Ok(_) => Err("the account is disabled or gone".into()),
            Err(err) => Err(store_failure(err)),
        }
    }
}

fn scope_key(scope: &KvScope) -> &str {
    match scope {
        KvScope::User(id) => id,
        KvScope::Shared => "",
    }
}

fn store_failure(err: StoreError) -> String {
    tracing::warn!(%err, "a plugin's store call failed");
    "the store is unavailable".into()
}

/// An API error as a plugin is told it.
fn told(err: AppError) -> String {
    err.body().message
}

#[async_trait]
impl HostServices for Bridge {
    async fn kv_get(
        &self,
        plugin: &str,
        scope: &KvScope,
        key: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        let store = &self.state()?.store;
        store
            .kv_get(plugin, scope_key(scope), key)
            .await
            .map_err(store_failure)
    }

    async fn kv_set(
        &self,
        plugin: &str,
        scope: &KvScope,
        key: &str,
        value: Vec<u8>,
        quota_bytes: u64,
    ) -> Result<(), String> {
        let store = &self.state()?.store;
        match store
            .kv_set(plugin, scope_key(scope), key, &value, quota_bytes)
            .await
        {
            Ok(()) => Ok(()),
            Err(err) if err.is_kv_quota() => Err(format!(
                "the plugin's key-value quota of {} KiB is used up",
                quota_bytes / 1024
            )),
            Err(err) => Err(store_failure(err)),
        }
    }

    async fn kv_delete(&self, plugin: &str, scope: &KvScope, key: &str) -> Result<bool, String> {
        let store = &self.state()?.store;
        store
            .kv_delete(plugin, scope_key(scope), key)
            .await
            .map_err(store_failure)
    }

    async fn kv_list(
        &self,
        plugin: &str,
        scope: &KvScope,
        prefix: &str,
    ) -> Result<Vec<String>, String> {
        let store = &self.state()?.store;
        store
            .kv_list(plugin, scope_key(scope), prefix, KV_LIST_LIMIT)
            .await
            .map_err(store_failure)
    }

    async fn generate(
        &self,
        caller: &HookCaller,
        model: &str,
        messages: Vec<ChatMessage>,
        sampling: SamplingChange,
    ) -> Result<String, String> {
        let state = self.state()?;
        let user = self.user(caller).await?;
        let request = generation::Request {
            model: model.to_owned(),
            surface: Surface::ChatCompletions,
            prompt: Prompt::Chat(messages),
            sampling: SamplingOverrides {
                temperature: sampling.temperature,
                top_p: sampling.top_p,
                top_k: sampling.top_k,
                min_p: sampling.min_p,
                repeat_penalty: sampling.repeat_penalty,
                max_tokens: sampling.max_tokens,
                seed: sampling.seed,
                stop: sampling.stop,
                ignore_eos: None,
            },
            chat_id: None,
            hooks: false,
            record_as: None,
        };
        let running = generation::start(state, &user, request, Default::default())
            .await
            .map_err(told)?;
        let mut events = running.events;
        let mut text = String::new();
        while let Some(event) = events.recv().await {
            match event {
                Event::Text { text: t, .. } => text.push_str(&t),
                Event::Done(_) => return Ok(text),
                Event::Failed { error } => return Err(told(error)),
                Event::Queued { .. } | Event::Rerouted { .. } | Event::Started { .. } => {}
            }
        }
        Err("the generation ended without a result".into())
    }

    async fn embed(
        &self,
        caller: &HookCaller,
        model: Option<&str>,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, String> {
        let state = self.state()?;
        let user = self.user(caller).await?;
        let record = match model {
            Some(name) => crate::registry::find_usable(state, &user, name)
                .await
                .map_err(told)?,
            None => crate::registry::usable_models(state, &user)
                .await
                .map_err(told)?
                .into_iter()
                .find(|m| m.kind == ModelKind::Embedding)
                .ok_or_else(|| "no embedding model is available to this user".to_owned())?,
        };
        generation::embed(state, &user, &record, texts)
            .await
            .map(|(vectors, _)| vectors)
            .map_err(told)
    }

    async fn plugin_disabled(&self, plugin: &str, reason: &str) {
        tracing::warn!(plugin, reason, "a plugin was turned off");
        let Ok(state) = self.state() else { return };
        // Only the reason: the technician's switch stays as it was, and
        // turning the plugin on again clears the reason.
        let off = PluginUpdate {
            disabled_reason: Some(Some(reason.to_owned())),
            updated_at: Some(now()),
            ..Default::default()
        };
        match state.store.update_plugin(plugin, &off).await {
            Ok(_) | Err(StoreError::NotFound) => {}
            Err(err) => {
                tracing::warn!(%err, plugin, "could not store that a plugin was turned off")
            }
        }
    }
}

/// The most keys one `list` call returns.
const KV_LIST_LIMIT: u32 = 1000;
