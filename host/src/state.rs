//! What every request handler can reach.

use std::sync::Arc;

use base64::Engine;
use corral_hooks::Hooks;
use corral_plugin_host::PluginHost;
use rand::RngCore;

use crate::auth::TokenKeys;
use crate::chat::ChatRuns;
use crate::config::Config;
use crate::download::Downloads;
use crate::events::EventBus;
use crate::inference::backends::BackendSet;
use crate::inference::manager::{ManagerLimits, ModelManager};
use crate::inference::scheduler::{QueueLimits, Scheduler};
use crate::inference::Inference;
use crate::metrics::Metrics;
use crate::ratelimit::SignInLimiter;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Settings key of the access-token signing secret. Kept in the store so
/// that every host sharing a database accepts the same tokens.
const JWT_SECRET_KEY: &str = "internal.jwt_secret";

/// Shared state of the HTTP layer.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub tokens: Arc<TokenKeys>,
    pub config: Arc<Config>,
    /// Sign-in throttling per client address and per account.
    pub limiter: Arc<SignInLimiter>,
    /// Held while a change that could remove the last active admin or
    /// technician is checked and written, so two such changes cannot both
    /// pass the check. (It serialises within one host process; hosts that
    /// share a database rely on such changes being rare and human-paced.)
    pub staff_changes: Arc<tokio::sync::Mutex<()>>,
    /// Background events (downloads, status changes), relayed at
    /// `/api/events`.
    pub events: EventBus,
    /// Model file downloads.
    pub downloads: Arc<Downloads>,
    /// Backends, loaded models and their queues.
    pub inference: Inference,
    /// Answers being written in chats.
    pub chat_runs: Arc<ChatRuns>,
    /// Plugin route requests under way, per account.
    pub plugin_requests: Arc<crate::limits::PerAccount>,
    /// What extensions do on every generation: the plugins.
    pub hooks: Arc<dyn Hooks>,
    /// The plugin runtime (the same object as `hooks`), for managing
    /// plugins and their routes.
    pub plugins: Arc<PluginHost>,
    /// Worker nodes on other machines.
    pub nodes: Arc<crate::inference::nodes::Nodes>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// What generations under way may still use of their users' daily
    /// allowances.
    pub quota_holds: crate::quota::Reservations,
    /// Begins when the server is asked to stop.
    pub shutdown: Shutdown,
}

impl AppState {
    /// Builds the state, creating the signing secret on first start.
    pub async fn new(store: Arc<dyn Store>, config: Config) -> anyhow::Result<Self> {
        let secret = signing_secret(store.as_ref()).await?;
        let metrics = Metrics::default();
        let events = EventBus::default();
        let downloads = Arc::new(Downloads::new(store.clone(), events.clone(), &config)?);
        let mut backends = BackendSet::discover(&config.backends_dir());
        if config.model_workers {
            backends = crate::inference::isolated::in_workers(
                backends,
                &config.data_dir,
                std::time::Duration::from_secs_f64(config.model_worker_stall_secs),
            )?;
        }
        let backends = Arc::new(backends);
        let nodes = Arc::new(crate::inference::nodes::Nodes::new(Arc::new(
            crate::download::NetPolicy::new(
                crate::download::Scope::Nodes,
                true,
                &config.node_allowed_origins,
            ),
        ))?);
        for record in crate::inference::nodes::load_records(store.as_ref()).await? {
            nodes.set(&record);
        }
        let inference = Inference::new(
            ModelManager::new(
                backends,
                ManagerLimits {
                    idle_unload: std::time::Duration::from_secs(config.idle_unload_secs),
                    memory_budget: config.memory_budget_mb * 1024 * 1024,
                    max_loaded: config.max_loaded_models,
                },
            )
            .with_upstreams(Arc::new(crate::inference::upstream::Upstreams::new(
                Arc::new(crate::download::NetPolicy::new(
                    crate::download::Scope::Upstreams,
                    config.upstream_allow_private,
                    &config.upstream_allowed_origins,
                )),
            )?))
            .with_nodes(nodes.clone())
            .on_bad_file({
                let downloads = downloads.clone();
                Arc::new(move |model_id, file, reason| {
                    let downloads = downloads.clone();
                    Box::pin(
                        async move { downloads.mark_unloadable(&model_id, &file, &reason).await },
                    )
                })
            }),
            Scheduler::new(QueueLimits {
                max_waiting: config.queue_max_waiting,
                per_user: config.per_user_generations,
            }),
        );
        let (plugins, bridge) = crate::plugins::runtime(&config.data_dir)?;
        let state = AppState {
            store,
            tokens: Arc::new(TokenKeys::new(
                secret.as_bytes(),
                config.access_token_ttl_secs,
            )),
            config: Arc::new(config),
            limiter: sign_in_limiter(&metrics),
            staff_changes: Arc::new(tokio::sync::Mutex::new(())),
            events,
            downloads,
            inference,
            chat_runs: Arc::new(ChatRuns::default()),
            plugin_requests: Default::default(),
            hooks: plugins.clone(),
            plugins,
            shutdown: Shutdown::default(),
            nodes,
            metrics,
            quota_holds: Default::default(),
        };
        bridge.connect(state.clone());
        let loaded = crate::plugins::load_all(&state).await?;
        if loaded > 0 {
            tracing::info!(loaded, "plugins loaded");
        }
        Ok(state)
    }
}

/// The secret access tokens are signed with, made on the first start.
///
/// Hosts sharing a store and starting together each make one; only the
/// first write is kept, and the others use it, so that every host accepts
/// the tokens of every other.
async fn signing_secret(store: &dyn Store) -> anyhow::Result<String> {
    let usable = |value: &Option<serde_json::Value>| match value {
        Some(serde_json::Value::String(s)) if s.len() >= 32 => Some(s.clone()),
        _ => None,
    };
    let stored = store.get_setting(JWT_SECRET_KEY).await?;
    if let Some(secret) = usable(&stored) {
        return Ok(secret);
    }
    let mut bytes = [0u8; 48];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::STANDARD.encode(bytes);
    let value = serde_json::Value::String(secret.clone());
    if store
        .swap_setting(JWT_SECRET_KEY, stored.as_ref(), &value)
        .await?
    {
        return Ok(secret);
    }
    usable(&store.get_setting(JWT_SECRET_KEY).await?)
        .ok_or_else(|| anyhow::anyhow!("the signing secret changed while starting; start again"))
}

/// The sign-in limiter, its size shown at `/metrics`.
fn sign_in_limiter(metrics: &Metrics) -> Arc<SignInLimiter> {
    let limiter = Arc::new(SignInLimiter::default());
    let help = "Keys the sign-in limiter holds, by kind (bounded).";
    for (kind, pick) in [("address", 0), ("account", 1)] {
        let limiter = Arc::downgrade(&limiter);
        metrics.watch(
            "corral_sign_in_tracked_keys",
            help,
            &[("kind", kind)],
            move || {
                limiter.upgrade().map_or(0.0, |l| {
                    let (addresses, accounts) = l.tracked();
                    (if pick == 0 { addresses } else { accounts }) as f64
                })
            },
        );
    }
    limiter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hosts_starting_together_sign_with_one_secret() {
        let (_dir, store) = crate::accounts::testing::store();
        let (a, b) = tokio::join!(
            signing_secret(store.as_ref()),
            signing_secret(store.as_ref())
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a, b);
        assert_eq!(
            store.get_setting(JWT_SECRET_KEY).await.unwrap(),
            Some(serde_json::Value::String(a.clone()))
        );
        assert_eq!(signing_secret(store.as_ref()).await.unwrap(), a);

        // One too short to trust is replaced.
        let short = serde_json::Value::String("short".into());
        store.put_setting(JWT_SECRET_KEY, &short).await.unwrap();
        let replaced = signing_secret(store.as_ref()).await.unwrap();
        assert!(replaced.len() >= 32 && replaced != a);
    }
}
