//! Fetching model files in the background.
//!
//! One task per model downloads `source` into
//! `<data_dir>/models/<model id>/<key>/<file name>.part`, where `key` is
//! derived from the source and the expected sha256: a changed source gets a
//! new directory, so the file in use stays untouched until its replacement
//! is whole, and the same source after a restart finds its partial file
//! again and resumes it with an HTTP `Range` request. The sha256 is computed
//! while writing; the file is renamed into place only when complete and
//! checked, and only then does the record point at it.
//!
//! Records are changed under [`Downloads::records`], which the API's
//! edits hold too, so a finishing download and a technician's edit cannot
//! overwrite each other's fields.
//!
//! What a download may reach is decided by [`net::NetPolicy`]; how large
//! it may grow by `max_download_bytes` and the free space of the data
//! directory's file system. Every downloaded file must be a GGUF file, the
//! only single-file format the backends load. Reasons stored on a record
//! name no server path and show a source URL only with its credentials
//! redacted ([`redact_source`]).

pub mod net;

pub use net::normalize_origin;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::config::Config;
use crate::events::{Event, EventBus};
use crate::model::{ModelRecord, ModelStatus};
use crate::store::Store;
pub use net::{GuardedResolver, NetPolicy, Scope};

/// Attempts in a row that may fail without progress before a download is
/// given up.
const MAX_ATTEMPTS: u32 = 4;
/// The first wait between attempts; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Least time between two progress events of one model.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// The span the download rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a connection may stay silent before the attempt counts as failed.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How the GGUF format starts.
const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Free space a download leaves on the data directory's file system.
const KEEP_FREE: u64 = 512 * 1024 * 1024;
/// Bytes written between two checks of the free space.
const SPACE_CHECK_EVERY: u64 = 16 * 1024 * 1024;

/// Where a model's download stands, for the API.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DownloadProgress {
    pub model_id: String,
    pub status: ModelStatus,
    /// Whether a download or check is running now.
    pub active: bool,
    /// Bytes fetched (or checked) so far.
    pub bytes: u64,
    /// `null` when not known.
    pub total: Option<u64>,
    /// Bytes per second over the last seconds.
    pub rate: f64,
    pub eta_secs: Option<u64>,
    pub error: Option<String>,
}

/// Progress numbers of one running job.
#[derive(Debug, Default)]
struct Tracker {
    bytes: u64,
    total: Option<u64>,
    window: VecDeque<(Instant, u64)>,
    last_publish: Option<Instant>,
}

impl Tracker {
    fn set(&mut self, bytes: u64, total: Option<u64>) {
        if bytes < self.bytes {
            self.window.clear();
        }
        self.bytes = bytes;
        self.total = total;
        let now = Instant::now();
        if self
            .window
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= Duration::from_millis(100))
        {
            self.window.push_back((now, bytes));
        }
        while self
            .window
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
            && self.window.len() > 1
        {
            self.window.pop_front();
        }
    }

    fn rate(&self) -> f64 {
        match (self.window.front(), self.window.back()) {
            (Some((t0, b0)), Some(_)) => {
                let elapsed = t0.elapsed().as_secs_f64();
                if elapsed < 0.05 {
                    0.0
                } else {
                    self.bytes.saturating_sub(*b0) as f64 / elapsed
                }
            }
            _ => 0.0,
        }
    }

    fn eta_secs(&self, rate: f64) -> Option<u64> {
        let total = self.total?;
        if rate <= 0.0 {
            return None;
        }
        Some((total.saturating_sub(self.bytes) as f64 / rate).ceil() as u64)
    }

    /// The event to publish now, if one is due (or `force`d).
    fn due_event(&mut self, model_id: &str, force: bool) -> Option<Event> {
        let now = Instant::now();
        if !force
            && self
                .last_publish
                .is_some_and(|t| now.duration_since(t) < PUBLISH_EVERY)
        {
            return None;
        }
        self.last_publish = Some(now);
        let rate = self.rate();
        Some(Event::ModelDownload {
            model_id: model_id.to_owned(),
            bytes: self.bytes,
            total: self.total,
            rate,
            eta_secs: self.eta_secs(rate),
        })
    }
}

struct Job {
    id: u64,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
    tracker: Arc<Mutex<Tracker>>,
}

/// Why a job stopped without a file.
enum Stop {
    Cancelled,
    Failed(String),
}

fn failed(reason: impl Into<String>) -> Stop {
    Stop::Failed(reason.into())
}

/// What one job works on, fixed when it starts.
struct Target {
    model_id: String,
    job_id: u64,
    source: String,
    /// `source` as reasons and logs may show it.
    shown: String,
    sha256: Option<String>,
    cancel: CancellationToken,
    tracker: Arc<Mutex<Tracker>>,
}

/// Runs and tracks the downloads of all models.
pub struct Downloads {
    store: Arc<dyn Store>,
    events: EventBus,
    models_dir: PathBuf,
    /// Folders local sources must lie in.
    model_dirs: Vec<PathBuf>,
    max_bytes: u64,
    net: Arc<NetPolicy>,
    client: reqwest::Client,
    jobs: Mutex<HashMap<String, Job>>,
    next_job: AtomicU64,
    /// Held for every read-modify-write of a model record.
    pub records: tokio::sync::Mutex<()>,
    /// Held while a job is started, and while a model is removed: one
    /// start at a time per host, so that two edits cannot leave a job no
    /// one tracks, and none can start for a model being removed.
    pub starting: tokio::sync::Mutex<()>,
}

impl Downloads {
    /// Marks a ready model whose file the backend cannot load at all as
    /// `failed` with the reason, so that it leaves the pickers and
    /// technicians see why (a new source fetches it again). The file stays
    /// until the model is edited or deleted. Only while `file` is still
    /// the model's: a load of the file an edit replaced says nothing of
    /// the new one.
    pub async fn mark_unloadable(&self, model_id: &str, file: &Path, reason: &str) {
        let _guard = self.records.lock().await;
        let mut model = match self.store.get_model(model_id).await {
            Ok(Some(model))
                if model.status == ModelStatus::Ready
                    && model
                        .file_path
                        .as_deref()
                        .is_some_and(|path| same_file(Path::new(path), file)) =>
            {
                model
            }
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(%err, "could not read a model to mark it failed");
                return;
            }
        };
        // Backends may name the file; the reason is shown to clients.
        let reason = match &model.file_path {
            Some(path) if !path.is_empty() => reason.replace(path.as_str(), "the model file"),
            _ => reason.to_owned(),
        };
        let reason = reason.as_str();
        model.status = ModelStatus::Failed;
        model.error = Some(format!("the backend cannot load the file: {reason}"));
        model.file_path = None;
        model.updated_at = crate::time::now();
        if let Err(err) = self.store.update_model(&model).await {
            tracing::warn!(%err, "could not mark a model failed");
            return;
        }
        tracing::warn!(model = %model.name, %reason, "marked failed: its file cannot be loaded");
        self.events.publish(Event::ModelStatus {
            model_id: model.id,
            status: model.status,
            error: model.error,
        });
    }

    pub fn new(store: Arc<dyn Store>, events: EventBus, config: &Config) -> anyhow::Result<Self> {
        let net = Arc::new(NetPolicy::new(
            net::Scope::Downloads,
            config.download_allow_private,
            &config.download_allowed_origins,
        ));
        let client = reqwest::Client::builder()
            .user_agent(concat!("corral/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .dns_resolver(Arc::new(GuardedResolver {
                policy: net.clone(),
            }))
            .redirect(net.redirect_policy())
            // A proxy from the environment would resolve host names itself,
            // past the resolver above and its address checks.
            .no_proxy()
            .build()?;
        Ok(Downloads {
            store,
            events,
            models_dir: config.data_dir.join("models"),
            model_dirs: config.model_dirs(),
            max_bytes: config.max_download_bytes,
            net,
            client,
            jobs: Mutex::new(HashMap::new()),
            next_job: AtomicU64::new(1),
            records: tokio::sync::Mutex::new(()),
            starting: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether a URL source may be downloaded, as far as the URL tells
    /// (a host name is checked once resolved, when the download runs).
    pub fn check_source_url(&self, source: &str) -> Result<(), String> {
        let url = reqwest::Url::parse(source).map_err(|e| format!("is not a valid URL: {e}"))?;
        self.net.check_url(&url).map_err(|refused| refused.0)
    }

    /// The directory that holds a model's downloaded files.
    pub fn model_dir(&self, model_id: &str) -> PathBuf {
        self.models_dir.join(model_id)
    }

    /// Where the file for the model's current `source` ends up.
    pub fn target_path(&self, model: &ModelRecord) -> PathBuf {
        self.model_dir(&model.id)
            .join(source_key(&model.source, model.sha256.as_deref()))
            .join(file_name(&model.source))
    }

    /// Starts fetching (or, for a local file with a sha256, checking) the
    /// model's `source`, replacing any job the model has running. The
    /// record is read again first: what is fetched is what it says now
    /// (another edit may have come in since the caller read it), and
    /// nothing is, once it no longer says `downloading` or is gone.
    pub async fn start(self: &Arc<Self>, model: &ModelRecord) {
        let _one = self.starting.lock().await;
        self.cancel(&model.id).await;
        let model = match self.store.get_model(&model.id).await {
            Ok(Some(now)) if now.status == ModelStatus::Downloading => now,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(%err, model = %model.name, "could not read a model to fetch it");
                return;
            }
        };
        let model = &model;
        let mut jobs = self.lock_jobs();
        let job_id = self.next_job.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let target = Target {
            model_id: model.id.clone(),
            job_id,
            source: model.source.clone(),
            shown: redact_source(&model.source),
            sha256: model.sha256.clone(),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
        };
        let this = self.clone();
        // Spawned while `jobs` is locked: the job looks itself up there
        // before it writes, and must find itself.
        let handle = tokio::spawn(async move { this.run(target).await });
        jobs.insert(
            model.id.clone(),
            Job {
                id: job_id,
                cancel,
                handle,
                tracker,
            },
        );
    }

    /// Stops the model's running job, if any, and waits until it has let
    /// go of its files.
    pub async fn cancel(&self, model_id: &str) {
        let job = self.lock_jobs().remove(model_id);
        if let Some(job) = job {
            job.cancel.cancel();
            if let Err(err) = job.handle.await {
                if err.is_panic() {
                    tracing::error!(model_id, "a download task panicked");
                }
            }
        }
    }

    /// Whether the model has a job running.
    pub fn is_active(&self, model_id: &str) -> bool {
        self.lock_jobs()
            .get(model_id)
            .is_some_and(|j| !j.handle.is_finished())
    }

    /// The model's progress: live numbers while a job runs, else what the
    /// record says.
    pub fn progress(&self, model: &ModelRecord) -> DownloadProgress {
        let live = self.lock_jobs().get(&model.id).and_then(|job| {
            if job.handle.is_finished() {
                return None;
            }
            let tracker = job.tracker.lock().ok()?;
            let rate = tracker.rate();
            Some((tracker.bytes, tracker.total, rate, tracker.eta_secs(rate)))
        });
        let (active, bytes, total, rate, eta_secs) = match live {
            Some((bytes, total, rate, eta)) => (true, bytes, total, rate, eta),
            None => {
                let size = match model.status {
                    ModelStatus::Ready => model.size_bytes.unwrap_or(0),
                    _ => 0,
                };
                (false, size, model.size_bytes, 0.0, None)
            }
        };
        DownloadProgress {
            model_id: model.id.clone(),
            status: model.status,
            active,
            bytes,
            total,
            rate,
            eta_secs,
            error: model.error.clone(),
        }
    }

    /// Restarts the downloads that were running when the host stopped.
    pub async fn resume_all(self: &Arc<Self>) -> anyhow::Result<usize> {
        let mut resumed = 0;
        for model in self.store.list_models().await? {
            if model.status == ModelStatus::Downloading {
                tracing::info!(model = %model.name, "resuming the model download");
                self.start(&model).await;
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// Removes the model's downloaded files (never a local source).
    pub async fn remove_files(&self, model_id: &str) {
        let dir = self.model_dir(model_id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => tracing::warn!(%err, dir = %dir.display(), "could not remove model files"),
        }
    }

    fn lock_jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Job>> {
        // A panic while holding this lock leaves the map consistent (every
        // change is a single insert or remove), so a poisoned lock is usable.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_current(&self, t: &Target) -> bool {
        self.lock_jobs()
            .get(&t.model_id)
            .is_some_and(|j| j.id == t.job_id)
    }

    fn publish_progress(&self, t: &Target, bytes: u64, total: Option<u64>, force: bool) {
        let event = match t.tracker.lock() {
            Ok(mut tracker) => {
                tracker.set(bytes, total);
                tracker.due_event(&t.model_id, force)
            }
            Err(_) => None,
        };
        if let Some(event) = event {
            self.events.publish(event);
        }
    }

    fn too_large(&self, total: Option<u64>) -> String {
        let size = total.map_or(String::new(), |t| format!(" ({t} bytes)"));
        format!(
            "the file{size} is larger than the download limit of {} bytes (`max_download_bytes`)",
            self.max_bytes
        )
    }

    /// Whether `needed` more bytes fit beside `part` and leave
    /// [`KEEP_FREE`] bytes free.
    fn check_space(&self, part: &Path, needed: u64) -> Result<(), String> {
        let dir = part.parent().unwrap_or(part);
        let free = match available_space(dir) {
            Ok(free) => free,
            Err(err) => {
                tracing::warn!(%err, "could not read the free disk space");
                return Ok(());
            }
        };
        if free < needed.saturating_add(KEEP_FREE) {
            return Err(format!(
                "not enough free disk space for the download: {needed} more bytes are needed, \
                 {free} are free, and {KEEP_FREE} must stay free"
            ));
        }
        Ok(())
    }

    async fn run(self: Arc<Self>, t: Target) {
        let outcome = if is_url(&t.source) {
            self.download(&t).await
        } else {
            self.check_local(&t).await
        };
        match outcome {
            Ok((path, size)) => self.finish(&t, Ok((path, size))).await,
            Err(Stop::Cancelled) => {}
            Err(Stop::Failed(reason)) => self.finish(&t, Err(reason)).await,
        }
        let mut jobs = self.lock_jobs();
        if jobs.get(&t.model_id).is_some_and(|j| j.id == t.job_id) {
            jobs.remove(&t.model_id);
        }
    }

    /// Writes the outcome into the record, unless the job was superseded or
    /// the model changed its source or was deleted meanwhile.
    async fn finish(&self, t: &Target, outcome: Result<(PathBuf, u64), String>) {
        let guard = tokio::select! {
            _ = t.cancel.cancelled() => return,
            guard = self.records.lock() => guard,
        };
        if !self.is_current(t) {
            return;
        }
        let mut model = match self.store.get_model(&t.model_id).await {
            Ok(Some(m)) if m.source == t.source && m.sha256 == t.sha256 => m,
            Ok(_) => return,
            Err(err) => {
                tracing::error!(%err, model_id = %t.model_id, "could not read the model record");
                return;
            }
        };
        let ready = outcome.as_ref().ok().map(|(path, _)| path.clone());
        match outcome {
            Ok((path, size)) => {
                model.status = ModelStatus::Ready;
                model.file_path = Some(path.to_string_lossy().into_owned());
                model.size_bytes = Some(size);
                model.error = None;
            }
            Err(reason) => {
                tracing::warn!(model = %model.name, %reason, "model download failed");
                model.status = ModelStatus::Failed;
                model.error = Some(reason);
            }
        }
        model.updated_at = crate::time::now();
        if let Err(err) = self.store.update_model(&model).await {
            tracing::error!(%err, model = %model.name, "could not record the download outcome");
            return;
        }
        drop(guard);
        if let Some(path) = ready {
            if is_url(&t.source) {
                self.prune(&t.model_id, &path).await;
            } else {
                self.remove_files(&t.model_id).await;
            }
        }
        self.events.publish(Event::ModelStatus {
            model_id: model.id,
            status: model.status,
            error: model.error,
        });
    }

    /// Removes everything in the model's directory but the directory of the
    /// file now in use: earlier files and abandoned partial downloads.
    async fn prune(&self, model_id: &str, keep: &Path) {
        let Some(keep_dir) = keep.parent() else {
            return;
        };
        let Ok(mut entries) = tokio::fs::read_dir(self.model_dir(model_id)).await else {
            return;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let path = entry.path();
            if path != keep_dir {
                if let Err(err) = tokio::fs::remove_dir_all(&path).await {
                    tracing::warn!(%err, path = %path.display(), "could not remove an old model file");
                }
            }
        }
    }

    /// Checks a local file against its expected sha256 (no copy is made).
    /// The path is checked against the model folders again: the folders
    /// may have changed since the record was made.
    async fn check_local(&self, t: &Target) -> Result<(PathBuf, u64), Stop> {
        let path = crate::registry::resolve_local(&self.model_dirs, &t.source)
            .await
            .map_err(|reason| failed(format!("the source {reason}")))?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| failed(format!("cannot read the local file: {e}")))?;
        if !meta.is_file() {
            return Err(failed(
                "a sha256 applies to a single file, not to a directory",
            ));
        }
        let size = meta.len();
        if !has_gguf_magic(&path).await {
            return Err(failed(NOT_GGUF));
        }
        if let Some(expected) = &t.sha256 {
            let mut hasher = Sha256::new();
            self.hash_prefix(t, &path, size, Some(size), &mut hasher)
                .await?;
            // The hash of a file that is not accepted is not shown: it would
            // tell something about a file the caller may not read.
            if &hex(&hasher.finalize()) != expected {
                return Err(failed(format!(
                    "sha256 mismatch: expected {expected}, got a file with a different hash"
                )));
            }
        }
        Ok((path, size))
    }

    /// Feeds the first `len` bytes of `path` to `hasher`, reporting progress.
    async fn hash_prefix(
        &self,
        t: &Target,
        path: &Path,
        len: u64,
        total: Option<u64>,
        hasher: &mut Sha256,
    ) -> Result<(), Stop> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| failed(format!("cannot read the file: {e}")))?;
        let mut reader = tokio::io::BufReader::with_capacity(1 << 20, file.take(len));
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            if t.cancel.is_cancelled() {
                return Err(Stop::Cancelled);
            }
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| failed(format!("cannot read the file: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            done += n as u64;
            self.publish_progress(t, done, total, false);
        }
        if done != len {
            return Err(failed("the file is shorter than expected"));
        }
        Ok(())
    }

    async fn download(&self, t: &Target) -> Result<(PathBuf, u64), Stop> {
        let dir = self
            .model_dir(&t.model_id)
            .join(source_key(&t.source, t.sha256.as_deref()));
        let name = file_name(&t.source);
        let final_path = dir.join(&name);
        let part = dir.join(format!("{name}.part"));
        let url = reqwest::Url::parse(&t.source)
            .map_err(|e| failed(format!("the source is not a valid URL: {e}")))?;
        self.net
            .check_url(&url)
            .map_err(|refused| failed(format!("{}: {refused}", t.shown)))?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| failed(format!("cannot create the download folder: {e}")))?;

        let (size, got) = match tokio::fs::metadata(&final_path).await {
            // Complete from an earlier run that stopped before recording it.
            Ok(meta) if meta.is_file() => {
                let mut hasher = Sha256::new();
                self.hash_prefix(t, &final_path, meta.len(), Some(meta.len()), &mut hasher)
                    .await?;
                tokio::fs::rename(&final_path, &part)
                    .await
                    .map_err(|e| failed(format!("cannot move the downloaded file: {e}")))?;
                (meta.len(), hex(&hasher.finalize()))
            }
            _ => self.fetch(t, &part).await?,
        };
        self.publish_progress(t, size, Some(size), true);

        // A wrong file is not worth resuming: drop it.
        let discard = |reason: String| async {
            remove_partial(&part).await;
            Stop::Failed(reason)
        };
        if let Some(expected) = &t.sha256 {
            if &got != expected {
                // A downloaded file's hash tells nothing the URL does not:
                // shown, unlike a local file's.
                return Err(
                    discard(format!("sha256 mismatch: expected {expected}, got {got}")).await,
                );
            }
        }
        if !has_gguf_magic(&part).await {
            return Err(discard(format!(
                "{NOT_GGUF}; check that the URL points at the model file itself"
            ))
            .await);
        }
        tokio::fs::rename(&part, &final_path)
            .await
            .map_err(|e| failed(format!("cannot move the download into place: {e}")))?;
        let _ = tokio::fs::remove_file(validator_path(&part)).await;
        Ok((final_path, size))
    }

    /// Downloads `t.source` into `part`, resuming what is there; returns the
    /// size and sha256 of the whole file.
    async fn fetch(&self, t: &Target, part: &Path) -> Result<(u64, String), Stop> {
        let mut failures = 0u32;
        let mut last_error = String::new();
        loop {
            if failures > 0 {
                if failures >= MAX_ATTEMPTS {
                    return Err(failed(last_error));
                }
                let backoff = FIRST_BACKOFF * 2u32.pow(failures - 1);
                tokio::select! {
                    _ = t.cancel.cancelled() => return Err(Stop::Cancelled),
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
            match self.attempt(t, part).await {
                Ok(done) => return Ok(done),
                Err(Attempt::Stop(stop)) => return Err(stop),
                Err(Attempt::Retry { reason, progressed }) => {
                    tracing::info!(model_id = %t.model_id, %reason, "download attempt failed; retrying");
                    failures = if progressed { 1 } else { failures + 1 };
                    last_error = reason;
                }
            }
        }
    }

    async fn attempt(&self, t: &Target, part: &Path) -> Result<(u64, String), Attempt> {
        let mut offset = match tokio::fs::metadata(part).await {
            Ok(meta) => meta.len(),
            Err(_) => 0,
        };
        let mut hasher = Sha256::new();
        if offset > 0 {
            self.hash_prefix(t, part, offset, None, &mut hasher)
                .await
                .map_err(Attempt::Stop)?;
        }
        let mut request = self.client.get(&t.source);
        let validator = validator_path(part);
        if offset > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
            // Only the same version of the file may be resumed: one that
            // changed since comes whole (a 200), not spliced onto the old.
            if let Some(seen) = read_validator(&validator).await {
                request = request.header(reqwest::header::IF_RANGE, seen);
            }
        }
        let response = tokio::select! {
            _ = t.cancel.cancelled() => return Err(Attempt::Stop(Stop::Cancelled)),
            r = request.send() => r.map_err(|e| match net::refusal(&e) {
                Some(refused) => Attempt::Stop(failed(format!("{}: {refused}", t.shown))),
                None => Attempt::retry(describe(e, &t.shown), false),
            })?,
        };
        let status = response.status();
        let total;
        let mut truncate = false;
        if status == reqwest::StatusCode::PARTIAL_CONTENT && offset > 0 {
            match content_range(response.headers()) {
                Some((Some(start), total_len)) if start == offset => total = total_len,
                _ => {
                    // Not the range asked for: start over.
                    remove_partial(part).await;
                    return Err(Attempt::retry(
                        "the server sent a different byte range than asked for",
                        false,
                    ));
                }
            }
        } else if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
            if let Some((None, Some(len))) = content_range(response.headers()) {
                if len == offset {
                    return Ok((offset, hex(&hasher.finalize())));
                }
            }
            remove_partial(part).await;
            return Err(Attempt::retry(
                "the partial download is longer than the file; starting over",
                false,
            ));
        } else if status.is_success() {
            // A server that ignores `Range`, or a file that changed, sends
            // the whole file.
            truncate = true;
            offset = 0;
            hasher = Sha256::new();
            total = response.content_length();
            keep_validator(&validator, response.headers()).await;
        } else if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            return Err(Attempt::retry(
                format!("the server answered {status} for {}", t.shown),
                false,
            ));
        } else {
            return Err(Attempt::Stop(failed(format!(
                "the server answered {status} for {}",
                t.shown
            ))));
        }
        if let Some(total) = total {
            if total > self.max_bytes {
                remove_partial(part).await;
                return Err(Attempt::Stop(failed(self.too_large(Some(total)))));
            }
        }
        let needed = total.map(|total| total.saturating_sub(offset));
        if let Err(reason) = self.check_space(part, needed.unwrap_or(0)) {
            return Err(Attempt::Stop(failed(reason)));
        }

        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(!truncate)
            .truncate(truncate)
            .open(part)
            .await
            .map_err(|e| Attempt::Stop(failed(format!("cannot write the download: {e}"))))?;
        self.publish_progress(t, offset, total, true);
        let start = offset;
        let mut space_checked_at = offset;
        let mut body = response.bytes_stream();
        let mut interrupted = None;
        loop {
            let next = tokio::select! {
                _ = t.cancel.cancelled() => {
                    let _ = file.flush().await;
                    return Err(Attempt::Stop(Stop::Cancelled));
                }
                next = body.next() => next,
            };
            match next {
                Some(Ok(chunk)) => {
                    if offset + chunk.len() as u64 > self.max_bytes {
                        drop(file);
                        remove_partial(part).await;
                        return Err(Attempt::Stop(failed(self.too_large(total))));
                    }
                    if offset + chunk.len() as u64 - space_checked_at >= SPACE_CHECK_EVERY {
                        let left = total.map_or(0, |t| t.saturating_sub(offset));
                        if let Err(reason) = self.check_space(part, left) {
                            drop(file);
                            // The partial file goes too: the space is what is short.
                            remove_partial(part).await;
                            return Err(Attempt::Stop(failed(reason)));
                        }
                        space_checked_at = offset;
                    }
                    file.write_all(&chunk).await.map_err(|e| {
                        Attempt::Stop(failed(format!("cannot write the download: {e}")))
                    })?;
                    hasher.update(&chunk);
                    offset += chunk.len() as u64;
                    self.publish_progress(t, offset, total, false);
                }
                Some(Err(err)) => {
                    interrupted = Some(describe(err, &t.shown));
                    break;
                }
                None => break,
            }
        }
        file.flush()
            .await
            .and(file.sync_all().await)
            .map_err(|e| Attempt::Stop(failed(format!("cannot write the download: {e}"))))?;
        let progressed = offset > start;
        if let Some(reason) = interrupted {
            return Err(Attempt::retry(
                format!("the download broke off after {offset} bytes: {reason}"),
                progressed,
            ));
        }
        if let Some(total) = total {
            if offset != total {
                return Err(Attempt::retry(
                    format!("the connection closed after {offset} of {total} bytes"),
                    progressed,
                ));
            }
        }
        Ok((offset, hex(&hasher.finalize())))
    }
}

/// How one attempt ended, when it did not bring the whole file.
enum Attempt {
    Stop(Stop),
    Retry { reason: String, progressed: bool },
}

impl Attempt {
    fn retry(reason: impl Into<String>, progressed: bool) -> Self {
        Attempt::Retry {
            reason: reason.into(),
            progressed,
        }
    }
}

/// Why a file was not accepted as a model.
const NOT_GGUF: &str = "the file is not in GGUF format (it does not start with `GGUF`)";

/// Bytes free for unprivileged use on the file system holding `dir`.
#[cfg(unix)]
// The field types differ between platforms.
#[allow(clippy::unnecessary_cast)]
fn available_space(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: statvfs is plain old data, so all zeroes is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is writable for the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(not(unix))]
fn available_space(_dir: &Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

/// Query parameters whose values are secrets, by lowercase name.
fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    const EXACT: &[&str] = &[
        "sig",
        "signature",
        "key",
        "code",
        "auth",
        "password",
        "pass",
    ];
    const PARTS: &[&str] = &[
        "token",
        "secret",
        "apikey",
        "api_key",
        "credential",
        "signature",
        "session",
    ];
    EXACT.contains(&name.as_str()) || PARTS.iter().any(|p| name.contains(p))
}

/// `source` as it may be shown: a URL's user name, password and the values
/// of query parameters that carry secrets (tokens, signatures, keys) are
/// replaced by `***`. Local paths come back unchanged.
pub fn redact_source(source: &str) -> String {
    if !is_url(source) {
        return source.to_owned();
    }
    let Ok(mut url) = reqwest::Url::parse(source) else {
        // Not a URL after all; show nothing that could be a secret in it.
        return source
            .split_once("://")
            .map_or_else(String::new, |(scheme, _)| format!("{scheme}://***"));
    };
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("***");
        let _ = url.set_password(None);
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_param(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        if pairs.iter().any(|(_, v)| v == "***") {
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
    }
    url.to_string()
}

/// Whether a source is an http(s) URL rather than a local path.
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// A short, stable name for a source and its expected hash.
fn source_key(source: &str, sha256: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(source.as_bytes());
    hasher.update(b"\n");
    hasher.update(sha256.unwrap_or("").as_bytes());
    hex(&hasher.finalize())[..16].to_owned()
}

/// The file name a URL's path ends with, made safe for the file system.
pub fn file_name(source: &str) -> String {
    let path = reqwest::Url::parse(source)
        .ok()
        .and_then(|u| {
            u.path_segments()
                .and_then(|mut s| s.next_back().map(str::to_owned))
        })
        .unwrap_or_default();
    let safe: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.');
    if safe.is_empty() || safe.len() > 200 {
        "model.bin".to_owned()
    } else {
        safe.to_owned()
    }
}

/// Whether `recorded` (as a record keeps it: maybe relative, or through a
/// link) names the file `loaded` (resolved, as loads use it).
fn same_file(recorded: &Path, loaded: &Path) -> bool {
    recorded == loaded
        || std::fs::canonicalize(recorded)
            .or_else(|_| std::path::absolute(recorded))
            .is_ok_and(|resolved| resolved == loaded)
}

/// Removes a partial download and the version it was of.
async fn remove_partial(part: &Path) {
    let _ = tokio::fs::remove_file(part).await;
    let _ = tokio::fs::remove_file(validator_path(part)).await;
}

/// Where the version of a partial download is kept: its `ETag` (a strong
/// one) or `Last-Modified`, sent back as `If-Range` on resuming.
fn validator_path(part: &Path) -> PathBuf {
    let mut name = part.file_name().unwrap_or_default().to_os_string();
    name.push(".version");
    part.with_file_name(name)
}

/// The version a full answer names, kept for resuming (or forgotten when
/// it names none).
async fn keep_validator(path: &Path, headers: &reqwest::header::HeaderMap) {
    let strong_etag = headers
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.starts_with("W/"));
    let seen = strong_etag.or_else(|| {
        headers
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
    });
    match seen.filter(|v| v.len() <= MAX_VALIDATOR_BYTES) {
        Some(seen) => {
            if let Err(err) = tokio::fs::write(path, seen).await {
                tracing::warn!(%err, "could not keep a download's version");
            }
        }
        None => {
            let _ = tokio::fs::remove_file(path).await;
        }
    }
}

async fn read_validator(path: &Path) -> Option<reqwest::header::HeaderValue> {
    let text = tokio::fs::read_to_string(path).await.ok()?;
    if text.len() > MAX_VALIDATOR_BYTES {
        return None;
    }
    reqwest::header::HeaderValue::from_str(&text).ok()
}

/// The longest version header kept.
const MAX_VALIDATOR_BYTES: usize = 1024;

/// `(start, total)` of a `Content-Range: bytes start-end/total` header;
/// `bytes */total` gives no start.
fn content_range(headers: &reqwest::header::HeaderMap) -> Option<(Option<u64>, Option<u64>)> {
    let value = headers.get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?;
    let spec = value.trim().strip_prefix("bytes ")?;
    let (range, total) = spec.split_once('/')?;
    let total = total.trim().parse().ok();
    let start = match range.trim() {
        "*" => None,
        r => Some(r.split_once('-')?.0.trim().parse().ok()?),
    };
    Some((start, total))
}

async fn has_gguf_magic(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    match tokio::fs::File::open(path).await {
        Ok(mut f) => f.read_exact(&mut magic).await.is_ok() && &magic == GGUF_MAGIC,
        Err(_) => false,
    }
}

/// Whether a local file is a GGUF file.
pub async fn is_gguf(path: &Path) -> bool {
    has_gguf_magic(path).await
}

/// An HTTP client error as a reason a technician can act on; `url` is the
/// source as it may be shown.
fn describe(err: reqwest::Error, url: &str) -> String {
    // The error's own text would name the URL with its credentials.
    let err = err.without_url();
    let mut root = String::new();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        root = s.to_string();
        source = s.source();
    }
    let detail = if root.is_empty() {
        err.to_string()
    } else {
        root
    };
    if err.is_timeout() {
        format!("timed out fetching {url}: {detail}")
    } else if err.is_connect() {
        format!("could not connect to the server of {url}: {detail}")
    } else {
        format!("fetching {url} failed: {detail}")
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_come_from_the_url_and_are_safe() {
        assert_eq!(
            file_name("https://huggingface.co/o/r/resolve/main/gemma-3-270m-Q4_K_M.gguf"),
            "gemma-3-270m-Q4_K_M.gguf"
        );
        assert_eq!(
            file_name("https://x.org/a/b%20c.gguf?download=1"),
            "b_20c.gguf"
        );
        assert_eq!(file_name("https://x.org/"), "model.bin");
        assert_eq!(file_name("https://x.org/.."), "model.bin");
    }

    #[test]
    fn content_ranges_parse() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::CONTENT_RANGE,
            "bytes 100-199/200".parse().unwrap(),
        );
        assert_eq!(content_range(&h), Some((Some(100), Some(200))));
        h.insert(
            reqwest::header::CONTENT_RANGE,
            "bytes */200".parse().unwrap(),
        );
        assert_eq!(content_range(&h), Some((None, Some(200))));
        h.insert(
            reqwest::header::CONTENT_RANGE,
            "bytes 0-9/*".parse().unwrap(),
        );
        assert_eq!(content_range(&h), Some((Some(0), None)));
    }

    #[test]
    fn credentials_in_sources_are_redacted() {
        assert_eq!(
            redact_source("https://user:secret@example.com/a/m.gguf"),
            "https://***@example.com/a/m.gguf"
        );
        assert_eq!(
            redact_source("https://example.com/m.gguf?download=true&token=abc&X-Amz-Signature=def"),
            "https://example.com/m.gguf?download=true&token=***&X-Amz-Signature=***"
        );
        assert_eq!(
            redact_source("https://example.com/m.gguf?download=true"),
            "https://example.com/m.gguf?download=true"
        );
        assert_eq!(redact_source("/srv/models/m.gguf"), "/srv/models/m.gguf");
    }

    #[test]
    fn keys_change_with_source_and_hash() {
        let a = source_key("https://x/a.gguf", None);
        assert_eq!(a.len(), 16);
        assert_ne!(a, source_key("https://x/b.gguf", None));
        assert_ne!(a, source_key("https://x/a.gguf", Some("00")));
        assert_eq!(a, source_key("https://x/a.gguf", None));
    }
}
