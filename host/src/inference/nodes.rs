//! Worker nodes: other machines running `corral node`, and the models
//! placed on them.
//!
//! A technician registers a node by URL and the token it was started
//! with. The host asks every node for its health each second; a node that
//! does not answer within two seconds (or refuses the token) is down, its
//! models' requests fail at once with `worker_unreachable` and the reason,
//! and it is up again with its first good answer. A model placed on a node
//! is loaded there on first use, like a local one, and its generations
//! stream the worker protocol (see [`super::worker`]) over the network: a
//! stream that breaks off or goes silent for three seconds ends with
//! `worker_unreachable` and marks the node down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use corral_sdk::backend::{
    BackendError, BackendResult, CancelToken, ChatMessage, GenerateRequest, GenerateSummary, Model,
    ModelInfo, TokenEvent,
};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use futures::StreamExt;

use super::isolated::{follow, Followed, Limits};
use super::manager::LoadSpec;
use super::node::{NodeReport, Placement, HOST_HEADER, PLACEMENT_HEADER};
use super::worker::WorkerError;
use super::worker::{TemplateRequest, TokenizeRequest, SEQUENCE_HEADER};
use super::InferenceError;
use crate::download::NetPolicy;
use crate::error::AppError;
use crate::store::{Store, StoreError, StoreResult};
use crate::time::serde_millis;

/// The prefix (and error code) of a request that could not reach its node.
pub const UNREACHABLE: &str = "worker_unreachable";
/// How often each node is asked for its health.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// A health answer later than this counts as none.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(2);
/// Time to connect to a node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for a node to start answering a generation or finish a short call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for a node to load a model.
const LOAD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The setting that holds the registered nodes.
const SETTING: &str = "internal.nodes";
/// The largest health, load or error answer read from a node.
const SMALL_ANSWER: usize = 1024 * 1024;
/// The largest answer to an embedding, tokenizing or template call.
pub(super) const LARGE_ANSWER: usize = 64 * 1024 * 1024;
/// Nodes a host may have.
pub const MAX_NODES: usize = 64;

/// A registered node, as stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// Where the node answers, e.g. `http://10.0.0.7:7000`.
    pub url: String,
    /// The token the node was started with. A secret: never shown.
    pub token: String,
    /// The SHA-256 fingerprint of the certificate an `https` node serves
    /// (as [`crate::tls::show`] writes it), trusted instead of the public
    /// certificate authorities; `None` trusts those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<String>,
    #[serde(with = "serde_millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "serde_millis")]
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for NodeRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRecord")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("token", &"***")
            .field("tls_fingerprint", &self.tls_fingerprint)
            .finish()
    }
}

/// One change of the stored node list (and of the links that follow it)
/// at a time.
pub static EDITS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How often the node list is read from the store again, so that hosts
/// sharing one store follow each other's node edits.
pub const SYNC_EVERY: Duration = Duration::from_secs(5);

/// Times one node edit is tried while other hosts keep changing the list.
const EDIT_TRIES: usize = 20;

/// Calls a host makes to let go of orphans per health answer of a node.
const MAX_FREES: usize = 8;

/// The registered nodes.
pub async fn load_records(store: &dyn Store) -> StoreResult<Vec<NodeRecord>> {
    Ok(read_records(store).await?.unwrap_or_else(|e| {
        tracing::error!(%e, "the stored list of nodes is unreadable; starting without nodes");
        Vec::new()
    }))
}

/// The registered nodes, or why the stored list is unreadable.
pub async fn read_records(
    store: &dyn Store,
) -> StoreResult<Result<Vec<NodeRecord>, serde_json::Error>> {
    Ok(match store.get_setting(SETTING).await? {
        Some(value) => serde_json::from_value(value),
        None => Ok(Vec::new()),
    })
}

/// Applies `edit` to the stored node list and writes the result back only
/// if the list is still what was read, so that hosts sharing one store
/// cannot lose each other's edits: after a concurrent change it reads the
/// list again and runs `edit` again. Nothing is written when `edit` fails
/// or changes nothing, nor over a list that cannot be read.
pub async fn edit_records<T>(
    store: &dyn Store,
    mut edit: impl FnMut(&mut Vec<NodeRecord>) -> Result<T, AppError>,
) -> Result<T, AppError> {
    for attempt in 1..=EDIT_TRIES {
        let before = store.get_setting(SETTING).await?;
        let mut records: Vec<NodeRecord> = match &before {
            Some(value) => serde_json::from_value(value.clone()).map_err(unreadable)?,
            None => Vec::new(),
        };
        let out = edit(&mut records)?;
        let after = serde_json::to_value(&records)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode the node list: {e}")))?;
        let unchanged = match &before {
            Some(value) => *value == after,
            None => records.is_empty(),
        };
        if unchanged || store.swap_setting(SETTING, before.as_ref(), &after).await? {
            return Ok(out);
        }
        // Another host wrote in between; let its next edit pass first.
        if attempt < EDIT_TRIES {
            let pause = 5 + rand::random::<u64>() % 46;
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
    Err(AppError::Conflict(
        "other hosts kept changing the node list; try again".to_owned(),
    ))
}

/// The error for a stored node list that cannot be read. It is never
/// written over: what it holds stays for an operator to mend.
fn unreadable(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("the stored list of nodes is unreadable: {e}"))
}

/// Whether a node is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Not asked yet.
    Unknown,
    Up,
    Down,
}

/// What is known of a node's health.
#[derive(Debug, Clone)]
pub struct Health {
    pub status: NodeStatus,
    /// When the status last changed.
    pub since: DateTime<Utc>,
    /// Its last good answer.
    pub last_seen: Option<DateTime<Utc>>,
    /// The latest reason it was marked down, and when; kept after it is
    /// up again, so that a node that fails and recovers between two looks
    /// still shows why.
    pub last_error: Option<(String, DateTime<Utc>)>,
    pub report: Option<NodeReport>,
}

impl Health {
    /// Why it is down, if it is.
    pub fn reason(&self) -> Option<&str> {
        match (&self.status, &self.last_error) {
            (NodeStatus::Down, Some((reason, _))) => Some(reason),
            _ => None,
        }
    }
}

/// The host's end of one node.
pub struct Link {
    pub name: String,
    base: String,
    token: String,
    pin: Option<String>,
    /// The host's shared client, or one that trusts only the node's pinned
    /// certificate.
    client: reqwest::Client,
    /// Why the node cannot be called at all (its pin cannot be used): it
    /// stays down with this reason and is not asked for its health.
    broken: Option<String>,
    health: Mutex<Health>,
}

impl Link {
    fn new(record: &NodeRecord, nodes: &Nodes) -> Self {
        let pinned = record.tls_fingerprint.as_deref().map(|shown| {
            crate::tls::parse(shown).and_then(|pin| {
                crate::download::net::guarded_client(&nodes.policy, CONNECT_TIMEOUT, Some(pin))
                    .map_err(|e| format!("{e:#}"))
            })
        });
        let (client, broken) = match pinned {
            None => (nodes.client.clone(), None),
            Some(Ok(client)) => (client, None),
            // Never the shared client: it would trust any certificate a
            // public authority signed for the node's name.
            Some(Err(e)) => (
                nodes.refusing.clone(),
                Some(format!("its pinned certificate cannot be used: {e}")),
            ),
        };
        let link = Link {
            name: record.name.clone(),
            base: record.url.trim_end_matches('/').to_owned(),
            token: record.token.clone(),
            pin: record.tls_fingerprint.clone(),
            client,
            broken: broken.clone(),
            health: Mutex::new(Health {
                status: NodeStatus::Unknown,
                since: Utc::now(),
                last_seen: None,
                last_error: None,
                report: None,
            }),
        };
        if let Some(reason) = broken {
            link.set_down(reason);
        }
        link
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why the node is down, if it is.
    pub fn down(&self) -> Option<String> {
        let health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health.reason().map(str::to_owned)
    }

    fn set_up(&self, report: NodeReport) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let now = Utc::now();
        if health.status != NodeStatus::Up {
            tracing::info!(node = %self.name, "node is up");
            health.since = now;
        }
        health.status = NodeStatus::Up;
        health.last_seen = Some(now);
        health.report = Some(report);
    }

    fn set_down(&self, reason: String) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let now = Utc::now();
        if health.status != NodeStatus::Down {
            tracing::warn!(node = %self.name, %reason, "node is down");
            health.since = now;
        }
        health.status = NodeStatus::Down;
        health.last_error = Some((reason, now));
    }

    /// The request's error. It names neither the node nor its address
    /// (users see it); the reason goes to the log, and technicians see the
    /// node's own reason at `/api/nodes`.
    fn unreachable(&self, reason: &str) -> BackendError {
        tracing::warn!(node = %self.name, %reason, "a request could not reach its node");
        BackendError::Internal(format!(
            "{UNREACHABLE}: the model's worker node is unreachable"
        ))
    }
}

/// The registered nodes and their health.
pub struct Nodes {
    client: reqwest::Client,
    /// Trusts no certificate and sends nothing unencrypted: for a node
    /// whose pinned certificate cannot be used.
    refusing: reqwest::Client,
    policy: Arc<NetPolicy>,
    links: RwLock<HashMap<String, Arc<Link>>>,
    copies: Arc<Copies>,
}

/// The host's loaded copies of each model placed on a node, by placement,
/// so that letting go of one copy frees the model on the node only when no
/// other copy of the same placement is left, and a copy whose placement was
/// replaced never loads it back.
#[derive(Default)]
struct Copies {
    /// By `node/id`.
    by_model: Mutex<HashMap<String, ModelCopies>>,
    /// Placements being loaded, by `node/id#digest`: not held yet, but not
    /// to be freed either.
    placing: Mutex<HashMap<String, usize>>,
    /// Frees in flight (of unloaded copies and of orphans), by `node/id`.
    freeing: Arc<Mutex<HashMap<String, usize>>>,
}

/// A free in flight, until the guard is dropped.
struct Freeing {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl Drop for Freeing {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// A placement being loaded, until the guard is dropped.
struct Placing<'a> {
    copies: &'a Copies,
    key: String,
}

impl Drop for Placing<'_> {
    fn drop(&mut self) {
        let mut placing = self
            .copies
            .placing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = placing.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                placing.remove(&self.key);
            }
        }
    }
}

/// The newest placement's digest, and the live copies per digest.
type ModelCopies = (String, HashMap<String, usize>);

impl Copies {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ModelCopies>> {
        self.by_model.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, key: &str, digest: &str) {
        let mut map = self.lock();
        let entry = map.entry(key.to_owned()).or_default();
        entry.0 = digest.to_owned();
        *entry.1.entry(digest.to_owned()).or_default() += 1;
    }

    /// Forgets one copy. When it was the last of its placement under
    /// `key` and no load of that placement under `key` is in flight (which
    /// takes it over), returns the guard under which to free it on the
    /// node: a load that starts later waits for that free to end. Only
    /// `key` counts, not the same model under another node name: a model
    /// moved to another node keeps its placement, and its old node must
    /// still let go of it.
    fn release(&self, key: &str, digest: &str) -> Option<Freeing> {
        let mut map = self.lock();
        if !remove_copy(&mut map, key, digest) {
            return None;
        }
        let placing = self.placing.lock().unwrap_or_else(|e| e.into_inner());
        if placing.contains_key(&format!("{key}#{digest}")) {
            return None;
        }
        Some(self.begin_freeing(key))
    }

    /// Counts a free of `key` in flight until the guard is dropped.
    fn begin_freeing(&self, key: &str) -> Freeing {
        *self
            .freeing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_default() += 1;
        Freeing {
            counts: self.freeing.clone(),
            key: key.to_owned(),
        }
    }

    fn placing(&self, key: &str, digest: &str) -> Placing<'_> {
        let key = format!("{key}#{digest}");
        *self
            .placing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default() += 1;
        Placing { copies: self, key }
    }

    /// Whether a copy of placement `digest` of model `id` is loaded or
    /// being loaded, on whichever node.
    #[cfg(test)]
    fn holds_anywhere(&self, id: &str, digest: &str) -> bool {
        let by_model = self.lock();
        let placing = self.placing.lock().unwrap_or_else(|e| e.into_inner());
        held_in(&by_model, &placing, id, digest)
    }

    /// Claims the orphan `key` (placement `digest` of model `id`) to let
    /// go of it: None while a copy holds or loads that placement, on
    /// whichever node, or while it is being let go of already. Checked
    /// and claimed under the lock that a load takes to start, so a load
    /// either stops the claim or starts after it and waits for the free to
    /// end (see [`Copies::is_freeing`]) instead of being undone by it.
    fn claim_orphan(&self, key: &str, id: &str, digest: &str) -> Option<Freeing> {
        let by_model = self.lock();
        let placing = self.placing.lock().unwrap_or_else(|e| e.into_inner());
        if held_in(&by_model, &placing, id, digest) {
            return None;
        }
        if self
            .freeing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
        {
            return None;
        }
        Some(self.begin_freeing(key))
    }

    /// Whether model `id` is being let go of on some node.
    fn is_freeing(&self, id: &str) -> bool {
        let suffix = format!("/{id}");
        self.freeing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .any(|key| key.ends_with(&suffix))
    }

    fn is_current(&self, key: &str, digest: &str) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|(current, _)| current == digest)
    }
}

/// Forgets one copy of placement `digest` under `key`; true when it was
/// the last.
fn remove_copy(map: &mut HashMap<String, ModelCopies>, key: &str, digest: &str) -> bool {
    let Some(entry) = map.get_mut(key) else {
        return true;
    };
    let last = match entry.1.get_mut(digest) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        _ => {
            entry.1.remove(digest);
            true
        }
    };
    if entry.1.is_empty() {
        map.remove(key);
    }
    last
}

/// Whether `by_model` or `placing` has a copy of placement `digest` of
/// model `id`, under whichever node name.
fn held_in(
    by_model: &HashMap<String, ModelCopies>,
    placing: &HashMap<String, usize>,
    id: &str,
    digest: &str,
) -> bool {
    let suffix = format!("/{id}");
    let placing_key = format!("{suffix}#{digest}");
    by_model
        .iter()
        .any(|(key, (_, live))| key.ends_with(&suffix) && live.contains_key(digest))
        || placing.keys().any(|key| key.ends_with(&placing_key))
}

/// Sequence ids unique among this process's generations on any node.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// This host process's id, sent to nodes in [`HOST_HEADER`]: a node frees
/// what this process placed once it stops hearing from it. Random, so a
/// restarted host (or one in a container, always pid 1) is another host.
fn host_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        use rand::RngCore;
        let mut bytes = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    })
}

impl Nodes {
    pub fn new(policy: Arc<NetPolicy>) -> anyhow::Result<Self> {
        let client = crate::download::net::guarded_client(&policy, CONNECT_TIMEOUT, None)?;
        let refusing = reqwest::Client::builder()
            .https_only(true)
            .tls_built_in_root_certs(false)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Nodes {
            client,
            refusing,
            policy,
            links: RwLock::default(),
            copies: Arc::default(),
        })
    }

    /// Checks a node's URL and returns it without a trailing slash.
    pub fn check_url(&self, url: &str) -> Result<String, String> {
        let parsed = Url::parse(url.trim()).map_err(|e| format!("not a URL: {e}"))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("must not hold credentials; give the token separately".into());
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err("must not have a query or fragment".into());
        }
        self.policy.check_url(&parsed).map_err(|r| r.0)?;
        Ok(parsed.as_str().trim_end_matches('/').to_owned())
    }

    /// Starts following `record` (or follows it anew after a change).
    pub fn set(&self, record: &NodeRecord) {
        let link = Arc::new(Link::new(record, self));
        self.write().insert(record.name.clone(), link);
    }

    /// Follows exactly `records`: new and changed nodes anew, removed ones
    /// no longer; an unchanged node keeps its link and health. Returns the
    /// names of the nodes changed or removed.
    pub fn sync(&self, records: &[NodeRecord]) -> Vec<String> {
        let followed = |record: &NodeRecord| {
            self.link(&record.name).is_some_and(|link| {
                link.base == record.url.trim_end_matches('/')
                    && link.token == record.token
                    && link.pin == record.tls_fingerprint
            })
        };
        // New links (and their clients) are made before the list is
        // locked; node edits are one at a time, so the list cannot change
        // meanwhile.
        let fresh: Vec<Arc<Link>> = records
            .iter()
            .filter(|record| !followed(record))
            .map(|record| Arc::new(Link::new(record, self)))
            .collect();
        let mut links = self.write();
        let mut changed = Vec::new();
        links.retain(|name, _| {
            let kept = records.iter().any(|r| &r.name == name);
            if !kept {
                changed.push(name.clone());
            }
            kept
        });
        for link in fresh {
            tracing::info!(node = %link.name, "following a node changed in the store");
            if links.contains_key(&link.name) {
                changed.push(link.name.clone());
            }
            links.insert(link.name.clone(), link);
        }
        changed
    }

    pub fn remove(&self, name: &str) {
        self.write().remove(name);
    }

    pub fn link(&self, name: &str) -> Option<Arc<Link>> {
        self.links
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Link>>> {
        self.links.write().unwrap_or_else(|e| e.into_inner())
    }

    fn all(&self) -> Vec<Arc<Link>> {
        self.links
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Asks every node for its health each [`POLL_EVERY`], for as long as
    /// the runtime runs.
    pub fn spawn_poller(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let nodes = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let polls = nodes.all().into_iter().map(|link| nodes.poll(link));
                futures::future::join_all(polls).await;
            }
        })
    }

    /// Asks one node for its health now.
    pub async fn poll(&self, link: Arc<Link>) {
        if let Some(reason) = &link.broken {
            link.set_down(reason.clone());
            return;
        }
        let answer = link
            .client
            .get(link.url("/health"))
            .bearer_auth(&link.token)
            .header(HOST_HEADER, host_id())
            .timeout(POLL_TIMEOUT)
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => {
                match read_json::<NodeReport>(r, SMALL_ANSWER, "the node").await {
                    Ok(report) => {
                        self.free_orphans(&link, &report);
                        link.set_up(report)
                    }
                    Err(e) => link.set_down(format!("its health answer is unreadable: {e}")),
                }
            }
            Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
                link.set_down("it refused the token".into())
            }
            Ok(r) => link.set_down(format!("it answered {}", r.status())),
            Err(e) => link.set_down(describe_within(&e, POLL_TIMEOUT)),
        }
    }

    /// Lets go of what `link`'s node holds for this process that no copy
    /// here holds or is loading (on any node: one node may be registered
    /// twice): models let go of while the node could not be reached. At
    /// most [`MAX_FREES`] calls per answer, one per model at a time, for
    /// well-formed ids only: the report is the node's word.
    fn free_orphans(&self, link: &Link, report: &NodeReport) {
        let plain = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let orphans = report.models.iter().filter_map(|hosted| {
            let mine = hosted.owners.iter().any(|o| o == host_id())
                && plain(&hosted.id, 100)
                && plain(&hosted.placement, 64);
            let key = format!("{}/{}", link.name, hosted.id);
            mine.then(|| {
                self.copies
                    .claim_orphan(&key, &hosted.id, &hosted.placement)
            })
            .flatten()
            .map(|freeing| (hosted, freeing))
        });
        for (hosted, freeing) in orphans.take(MAX_FREES) {
            tracing::info!(node = %link.name, model = %hosted.id, "letting go of a model this host no longer holds");
            let request = free_request(link, &hosted.id, &hosted.placement);
            tokio::spawn(async move {
                let _ = request.send().await;
                drop(freeing);
            });
        }
    }

    /// Loads `spec` on its node and returns a model that runs there.
    pub async fn open(
        &self,
        spec: &LoadSpec,
        node: &str,
    ) -> Result<(NodeModel, ModelInfo), InferenceError> {
        let link = self.link(node).ok_or_else(|| {
            tracing::warn!(%node, model = %spec.name, "the model's node is not registered");
            InferenceError::Backend(BackendError::Internal(format!(
                "{UNREACHABLE}: the model's worker node is not registered"
            )))
        })?;
        let placement = Placement {
            backend: spec.backend.clone(),
            file: spec.request.path.clone(),
            size_bytes: Some(spec.file_bytes).filter(|n| *n > 0),
            request: spec.request.clone(),
        };
        let digest = placement.digest();
        let copy_key = format!("{node}/{}", spec.key);
        let placing = self.copies.placing(&copy_key, &digest);
        // A free of this model that began before this load must land
        // first, or it would undo the placement. Frees give up after
        // POLL_TIMEOUT.
        while self.copies.is_freeing(&spec.key) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let info = place(&link, &spec.key, &placement)
            .await
            .map_err(|e| match e {
                BackendError::Internal(m) if m.starts_with(UNREACHABLE) => {
                    InferenceError::Backend(BackendError::Internal(m))
                }
                other => InferenceError::Load {
                    model: spec.name.clone(),
                    reason: format!("on its worker node: {other}"),
                    bad_file: false,
                },
            })?;
        self.copies.add(&copy_key, &digest);
        drop(placing);
        let model = NodeModel {
            link,
            id: spec.key.clone(),
            placement,
            digest,
            copies: self.copies.clone(),
            copy_key,
            info: info.clone(),
            handle: Handle::current(),
        };
        Ok((model, info))
    }
}

/// A failed call to a node (with the time limit it had), told without its
/// URL's details.
fn describe_within(e: &reqwest::Error, limit: Duration) -> String {
    if let Some(refused) = crate::download::net::refusal(e) {
        return refused.0;
    }
    if e.is_timeout() {
        return format!("no answer within {} s", limit.as_secs());
    }
    if let Some(tls) = crate::tls::failure(e) {
        return tls;
    }
    if e.is_connect() {
        return "cannot connect".into();
    }
    "the connection failed".into()
}

/// Loads a model on its node; the node answers at once when it already
/// holds it.
async fn place(link: &Link, id: &str, placement: &Placement) -> BackendResult<ModelInfo> {
    if let Some(reason) = link.down() {
        return Err(link.unreachable(&reason));
    }
    let sent = link
        .client
        .put(link.url(&format!("/models/{id}")))
        .bearer_auth(&link.token)
        .header(HOST_HEADER, host_id())
        .timeout(LOAD_TIMEOUT)
        .json(placement)
        .send();
    // A load may take minutes; a node that goes down meanwhile ends it.
    let answer = tokio::select! {
        answer = sent => answer.map_err(|e| failed(link, &e, LOAD_TIMEOUT))?,
        reason = went_down(link) => return Err(link.unreachable(&reason)),
    };
    if !answer.status().is_success() {
        return Err(refused(link, answer).await);
    }
    read_json(answer, SMALL_ANSWER, "the node").await
}

/// The call that frees placement `digest` of model `id` on `link`'s node
/// (a newer placement there stays).
fn free_request(link: &Link, id: &str, digest: &str) -> reqwest::RequestBuilder {
    link.client
        .delete(link.url(&format!("/models/{id}")))
        .bearer_auth(&link.token)
        .header(HOST_HEADER, host_id())
        .header(PLACEMENT_HEADER, digest)
        .timeout(POLL_TIMEOUT)
}

/// Resolves with the reason once the node is marked down.
async fn went_down(link: &Link) -> String {
    loop {
        if let Some(reason) = link.down() {
            return reason;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How long a node's stream may go on after a cancel before the host stops
/// following it (a long prompt is read before the engine looks again).
const CANCEL_GRACE: Duration = Duration::from_secs(30);

/// The most tokens a prompt can be: one per byte, and a few special ones.
pub(super) fn most_prompt_tokens(prompt: &str) -> u32 {
    u32::try_from(prompt.len())
        .unwrap_or(u32::MAX)
        .saturating_add(16)
}

/// The most text an answer of `max_tokens` may bring: a token is rarely
/// more than a few bytes, so more means a broken or hostile server.
pub(super) fn most_text(max_tokens: u32) -> usize {
    (max_tokens as usize)
        .saturating_mul(64)
        .saturating_add(64 * 1024)
}

/// A node's (or a worker's: `from`) JSON answer, read up to `limit` bytes.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    answer: reqwest::Response,
    limit: usize,
    from: &str,
) -> BackendResult<T> {
    let unreadable =
        |e: &dyn std::fmt::Display| BackendError::Internal(format!("{from}'s answer: {e}"));
    let mut body = answer.bytes_stream();
    let mut bytes = Vec::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| unreadable(&e))?);
            if bytes.len() > limit {
                return Err(unreadable(&format!("longer than {limit} bytes")));
            }
        }
        Ok(())
    };
    tokio::time::timeout(ANSWER_READ_TIMEOUT, read)
        .await
        .map_err(|_| {
            unreadable(&format!(
                "not read within {} s",
                ANSWER_READ_TIMEOUT.as_secs()
            ))
        })??;
    serde_json::from_slice(&bytes).map_err(|e| unreadable(&e))
}

/// How long an answer's body may take to arrive once its head has.
const ANSWER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The most of a node's own error text passed on to users and stored.
const MOST_ERROR_BYTES: usize = 1000;

/// A node's error with its text cut to [`MOST_ERROR_BYTES`].
fn capped(error: BackendError) -> BackendError {
    let cut = |mut text: String| {
        if text.len() > MOST_ERROR_BYTES {
            let mut end = MOST_ERROR_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        text
    };
    match error {
        BackendError::InvalidModel(m) => BackendError::InvalidModel(cut(m)),
        BackendError::InvalidRequest(m) => BackendError::InvalidRequest(cut(m)),
        BackendError::ContextOverflow(m) => BackendError::ContextOverflow(cut(m)),
        BackendError::Unsupported(m) => BackendError::Unsupported(cut(m)),
        BackendError::Internal(m) => BackendError::Internal(cut(m)),
    }
}

/// The error of a request the node reached and refused.
async fn refused(link: &Link, answer: reqwest::Response) -> BackendError {
    if answer.status() == StatusCode::UNAUTHORIZED {
        link.set_down("it refused the token".into());
        return link.unreachable("it refused the token");
    }
    let status = answer.status();
    if status == StatusCode::CONFLICT {
        // It lost the model again right after it was loaded again.
        return link.unreachable("it does not hold the model");
    }
    match read_json::<WorkerError>(answer, SMALL_ANSWER, "the node").await {
        Ok(e) if !status.is_server_error() => capped(e.error),
        // A proxy in front of a dead node, or the node failing.
        Ok(e) => link.unreachable(&format!("it answered {status}: {}", capped(e.error))),
        Err(_) => link.unreachable(&format!("it answered {status}")),
    }
}

/// Marks the node down and returns the request's error.
fn lost(link: &Link, what: &str) -> BackendError {
    link.set_down(what.to_owned());
    link.unreachable(what)
}

/// The error of a call that got no answer. A call that ran out of its own
/// time (a long load or embedding) says nothing of the node's health,
/// which the poller judges; a refused connection does.
fn failed(link: &Link, e: &reqwest::Error, limit: Duration) -> BackendError {
    let what = describe_within(e, limit);
    if e.is_timeout() {
        link.unreachable(&what)
    } else {
        lost(link, &what)
    }
}

/// A model loaded on a node.
pub struct NodeModel {
    link: Arc<Link>,
    id: String,
    placement: Placement,
    digest: String,
    copies: Arc<Copies>,
    copy_key: String,
    info: ModelInfo,
    handle: Handle,
}

impl NodeModel {
    /// Loads the model again after the node lost it (it restarted). A
    /// copy whose placement was replaced in the meantime does not: that
    /// would evict the newer one. Failures here are the node's.
    async fn place_again(&self) -> BackendResult<ModelInfo> {
        if !self.copies.is_current(&self.copy_key, &self.digest) {
            return Err(self
                .link
                .unreachable("the model was changed while this request ran"));
        }
        place(&self.link, &self.id, &self.placement)
            .await
            .map_err(|e| match e {
                BackendError::Internal(m) if m.starts_with(UNREACHABLE) => {
                    BackendError::Internal(m)
                }
                other => self
                    .link
                    .unreachable(&format!("it could not load the model again: {other}")),
            })
    }

    async fn refused(&self, answer: reqwest::Response) -> BackendError {
        refused(&self.link, answer).await
    }

    fn lost(&self, what: &str) -> BackendError {
        lost(&self.link, what)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + Sync),
    ) -> BackendResult<T> {
        if let Some(reason) = self.link.down() {
            return Err(self.link.unreachable(&reason));
        }
        for attempt in 0..2 {
            let answer = self
                .link
                .client
                .post(self.link.url(&format!("/models/{}{path}", self.id)))
                .bearer_auth(&self.link.token)
                .timeout(CALL_TIMEOUT)
                .json(body)
                .send()
                .await
                .map_err(|e| failed(&self.link, &e, CALL_TIMEOUT))?;
            if answer.status().is_success() {
                // A node that answers garbage is a broken node, not a bug
                // here.
                return read_json(answer, LARGE_ANSWER, "the node")
                    .await
                    .map_err(|e| self.link.unreachable(&e.to_string()));
            }
            if attempt == 0 && answer.status() == StatusCode::CONFLICT {
                // The node restarted and lost the model: load it again.
                self.place_again().await?;
                continue;
            }
            return Err(self.refused(answer).await);
        }
        unreachable!("the second attempt returns")
    }

    async fn generate_async(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        if let Some(reason) = self.link.down() {
            return Err(self.link.unreachable(&reason));
        }
        let mut started_sent = false;
        for attempt in 0..2 {
            // Unique among the hosts that share the node.
            let sequence = format!("{}-{}", host_id(), SEQUENCE.fetch_add(1, Ordering::Relaxed));
            let sent = self
                .link
                .client
                .post(self.link.url(&format!("/models/{}/generate", self.id)))
                .bearer_auth(&self.link.token)
                .header(SEQUENCE_HEADER, &sequence)
                .json(request)
                .send();
            let answer = match tokio::time::timeout(CALL_TIMEOUT, sent).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => return Err(failed(&self.link, &e, CALL_TIMEOUT)),
                Err(_) => {
                    return Err(self
                        .link
                        .unreachable(&format!("no answer within {} s", CALL_TIMEOUT.as_secs())))
                }
            };
            if answer.status() == StatusCode::CONFLICT && attempt == 0 {
                self.place_again().await?;
                continue;
            }
            if !answer.status().is_success() {
                return Err(self.refused(answer).await);
            }
            let cancel_call = {
                let request = self
                    .link
                    .client
                    .post(
                        self.link
                            .url(&format!("/models/{}/cancel/{sequence}", self.id)),
                    )
                    .bearer_auth(&self.link.token)
                    .timeout(POLL_TIMEOUT);
                let request = Mutex::new(Some(request));
                move || -> futures::future::BoxFuture<'static, ()> {
                    let request = request.lock().unwrap_or_else(|e| e.into_inner()).take();
                    Box::pin(async move {
                        if let Some(request) = request {
                            let _ = request.send().await;
                        }
                    })
                }
            };
            // Text past what `max_tokens` can produce (a token is rarely
            // more than a few bytes) means a broken or hostile node, and
            // the counts it reports are capped by what the request can
            // use: a node never charges a user more than that.
            let limits = Limits {
                stall: None,
                text_bytes: Some(most_text(request.sampling.max_tokens)),
                tokens: Some(request.sampling.max_tokens),
                prompt_tokens: Some(most_prompt_tokens(&request.prompt)),
                cancel_grace: Some(CANCEL_GRACE),
            };
            let followed = follow(
                answer,
                sink,
                cancel,
                &mut started_sent,
                limits,
                &cancel_call,
            )
            .await;
            let lost = |what: &str| {
                // The node may still be generating: stop it, if it hears.
                tokio::spawn(cancel_call());
                self.lost(what)
            };
            return match followed {
                Followed::Finished(result) => result.map_err(capped),
                Followed::Lost { what, .. } => Err(lost(&what)),
                // No stall limit was given.
                Followed::Stalled { .. } => Err(lost("its engine made no progress")),
            };
        }
        unreachable!("the second attempt returns")
    }
}

impl Drop for NodeModel {
    fn drop(&mut self) {
        // Unloaded here: free it there, once no other copy of the same
        // placement is left (a renamed model's new copy shares it), and
        // only this placement: a newer one under the same id stays. A node
        // that is gone has nothing to free.
        let Some(freeing) = self.copies.release(&self.copy_key, &self.digest) else {
            return;
        };
        let request = free_request(&self.link, &self.id, &self.digest);
        self.handle.spawn(async move {
            let _ = request.send().await;
            drop(freeing);
        });
    }
}

impl Model for NodeModel {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        self.handle
            .block_on(self.generate_async(request, sink, cancel))
    }

    fn embed(&self, inputs: &[String]) -> BackendResult<Vec<Vec<f32>>> {
        self.handle.block_on(self.call("/embed", &inputs))
    }

    fn tokenize(&self, text: &str, add_bos: bool) -> BackendResult<Vec<u32>> {
        let request = TokenizeRequest {
            text: text.to_owned(),
            add_bos,
        };
        self.handle.block_on(self.call("/tokenize", &request))
    }

    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> BackendResult<String> {
        let request = TemplateRequest {
            messages: messages.to_vec(),
            add_generation_prompt,
        };
        self.handle.block_on(self.call("/template", &request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_error_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(MOST_ERROR_BYTES);
        let BackendError::InvalidRequest(cut) = capped(BackendError::InvalidRequest(long)) else {
            panic!("the kind changed");
        };
        assert!(
            cut.len() <= MOST_ERROR_BYTES + '…'.len_utf8(),
            "{}",
            cut.len()
        );
        assert!(cut.ends_with('…'));
        let short = capped(BackendError::Internal("short".into()));
        assert_eq!(short, BackendError::Internal("short".into()));
        assert_eq!(most_prompt_tokens("four"), 20);
    }

    #[test]
    fn a_placement_is_freed_with_its_last_copy_and_a_replaced_one_is_not_current() {
        let copies = Copies::default();
        copies.add("n/m", "a");
        copies.add("n/m", "a");
        assert!(copies.is_current("n/m", "a"));
        // A renamed model: two copies of one placement.
        assert!(
            copies.release("n/m", "a").is_none(),
            "another copy still uses it"
        );
        copies.add("n/m", "b");
        assert!(!copies.is_current("n/m", "a") && copies.is_current("n/m", "b"));
        assert!(copies.release("n/m", "a").is_some(), "the last copy of `a`");
        assert!(copies.release("n/m", "b").is_some());
        assert!(copies.lock().is_empty());
    }

    #[test]
    fn a_placement_being_loaded_or_held_is_not_an_orphan() {
        let copies = Copies::default();
        assert!(!copies.holds_anywhere("m", "a"));
        let first = copies.placing("n/m", "a");
        let second = copies.placing("n/m", "a");
        assert!(copies.holds_anywhere("m", "a") && !copies.holds_anywhere("m", "b"));
        assert!(!copies.holds_anywhere("xm", "a") && !copies.holds_anywhere("n", "a"));
        drop(first);
        assert!(
            copies.holds_anywhere("m", "a"),
            "another load of it still runs"
        );
        copies.add("n/m", "a");
        drop(second);
        assert!(copies.holds_anywhere("m", "a"), "loaded");
        assert!(copies.release("n/m", "a").is_some());
        assert!(!copies.holds_anywhere("m", "a"), "let go of");
        // The same node under another name holds it.
        copies.add("alias/m", "a");
        assert!(copies.holds_anywhere("m", "a"));
        assert!(copies.placing.lock().unwrap().is_empty());
    }

    #[test]
    fn an_orphan_is_claimed_once_and_not_while_it_loads_and_a_later_load_waits() {
        let copies = Copies::default();
        let claim = copies.claim_orphan("n/m", "m", "a").expect("an orphan");
        assert!(
            copies.claim_orphan("n/m", "m", "a").is_none(),
            "one call at a time"
        );
        // A load that starts now must wait for the free.
        let load = copies.placing("n/m", "a");
        assert!(copies.is_freeing("m") && !copies.is_freeing("xm"));
        drop(claim);
        assert!(!copies.is_freeing("m"), "the free is over");
        // While it loads, or once it is held, the placement is no orphan.
        assert!(copies.claim_orphan("n/m", "m", "a").is_none(), "loading");
        copies.add("n/m", "a");
        drop(load);
        assert!(copies.claim_orphan("alias/m", "m", "a").is_none(), "held");
        assert!(
            copies.claim_orphan("n/m", "m", "b").is_some(),
            "another placement"
        );
        assert!(copies.release("n/m", "a").is_some());
        assert!(copies.claim_orphan("n/m", "m", "a").is_some(), "let go of");
    }

    #[test]
    fn an_unloaded_copy_is_freed_unless_a_new_load_takes_it_over_and_a_later_load_waits() {
        let copies = Copies::default();
        copies.add("n/m", "a");
        let free = copies.release("n/m", "a").expect("the last copy is freed");
        assert!(copies.is_freeing("m"), "a load now waits for the free");
        assert!(
            copies.claim_orphan("n/m", "m", "a").is_none(),
            "no orphan call beside it"
        );
        drop(free);
        assert!(!copies.is_freeing("m"));
        // A load of the same placement began before the last copy went:
        // it takes the model over, so it is not freed.
        copies.add("n/m", "a");
        let load = copies.placing("n/m", "a");
        assert!(copies.release("n/m", "a").is_none(), "taken over");
        assert!(!copies.is_freeing("m"));
        copies.add("n/m", "a");
        drop(load);
        // Two frees in flight under one key: a load waits for both.
        let first = copies.release("n/m", "a").expect("freed");
        copies.add("n/m", "a");
        let second = copies.release("n/m", "a").expect("freed again");
        drop(first);
        assert!(copies.is_freeing("m"), "the second free is still in flight");
        drop(second);
        assert!(!copies.is_freeing("m"));
    }

    #[test]
    fn a_sync_follows_the_stored_list_and_keeps_unchanged_links() {
        let policy = NetPolicy::new(crate::download::Scope::Nodes, true, &[]);
        let nodes = Nodes::new(Arc::new(policy)).unwrap();
        let record = |name: &str, url: &str, token: &str| NodeRecord {
            name: name.into(),
            url: url.into(),
            token: token.into(),
            tls_fingerprint: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let a = record("a", "http://10.0.0.1:7000", "token-a-0123456789");
        let b = record("b", "http://10.0.0.2:7000", "token-b-0123456789");
        assert!(
            nodes.sync(&[a.clone(), b.clone()]).is_empty(),
            "new, not changed"
        );
        let (first_a, first_b) = (nodes.link("a").unwrap(), nodes.link("b").unwrap());
        let b_moved = record("b", "http://10.0.0.3:7000", "token-b-0123456789");
        assert_eq!(nodes.sync(&[a.clone(), b_moved]), ["b"]);
        assert!(
            Arc::ptr_eq(&first_a, &nodes.link("a").unwrap()),
            "unchanged"
        );
        let moved = nodes.link("b").unwrap();
        assert!(!Arc::ptr_eq(&first_b, &moved) && moved.base == "http://10.0.0.3:7000");
        let a_token = record("a", "http://10.0.0.1:7000/", "token-a-9876543210");
        let mut changed = nodes.sync(&[a_token]);
        changed.sort();
        assert_eq!(changed, ["a", "b"]);
        assert_eq!(nodes.link("a").unwrap().token, "token-a-9876543210");
        assert!(nodes.link("b").is_none(), "removed from the store");
        let a = nodes.link("a").unwrap();
        let pinned = NodeRecord {
            url: "https://10.0.0.1:7000".into(),
            tls_fingerprint: Some(crate::tls::show(&[7; 32])),
            ..record("a", "", "token-a-9876543210")
        };
        assert_eq!(nodes.sync(std::slice::from_ref(&pinned)), ["a"]);
        assert!(!Arc::ptr_eq(&a, &nodes.link("a").unwrap()), "followed anew");
        assert!(nodes.sync(std::slice::from_ref(&pinned)).is_empty());
        let repinned = NodeRecord {
            tls_fingerprint: Some(crate::tls::show(&[8; 32])),
            ..pinned
        };
        assert_eq!(nodes.sync(&[repinned]), ["a"], "a new pin is a change");
    }

    #[test]
    fn a_pin_that_cannot_be_read_leaves_the_node_down_and_trusting_nothing() {
        let policy = NetPolicy::new(crate::download::Scope::Nodes, true, &[]);
        let nodes = Nodes::new(Arc::new(policy)).unwrap();
        nodes.set(&NodeRecord {
            name: "a".into(),
            url: "https://10.0.0.1:7000".into(),
            token: "token-a-0123456789".into(),
            tls_fingerprint: Some("not a fingerprint".into()),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        });
        let link = nodes.link("a").unwrap();
        let reason = link.down().expect("down at once");
        assert!(reason.contains("pinned certificate"), "{reason}");
        // It is not called: a health check keeps the reason instead of
        // trying the address.
        futures::executor::block_on(nodes.poll(link.clone()));
        assert_eq!(link.down(), Some(reason));
    }

    #[test]
    fn the_host_id_is_one_per_process_and_a_node_accepts_it() {
        assert_eq!(host_id(), host_id());
        assert_eq!(host_id().len(), 24);
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(HOST_HEADER, host_id().parse().unwrap());
        assert_eq!(
            super::super::node::caller_host(&headers).as_deref(),
            Some(host_id())
        );
    }
}
