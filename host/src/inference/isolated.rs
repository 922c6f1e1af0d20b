//! Models in worker processes: a [`Backend`] whose `load` starts a
//! `corral worker` for the model and whose models forward every call to
//! it (see [`super::worker`] for the wire format). The rest of the
//! runtime (queues, quotas, the manager) sees an ordinary model.
//!
//! Each worker runs in its own process group and dies with the host
//! (parent-death signal). A worker that crashes is started again, after a
//! pause that doubles with each crash in a row; a generation that had
//! produced no text yet is tried once more on the new worker, one that
//! had ends with `worker_crashed`. A worker whose engine stops making
//! progress (it no longer checks for cancellation, as it must at every
//! decode step) is killed and counted as crashed, and so is one that dies
//! while starting or loading. Five crashes within a minute mark the
//! model failed: its requests are refused at once with the last line the
//! worker wrote to stderr, until it is loaded again with other parameters
//! or its crashes are a minute old (crashes are counted per file and load
//! parameters, across loads, so that a file that kills its engine while
//! loading is not loaded afresh for every request).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_sdk::backend::{
    Backend, BackendError, BackendInfo, BackendResult, CancelToken, ChatMessage, FinishReason,
    GenerateRequest, GenerateSummary, LoadRequest, Model, ModelInfo, TokenEvent,
};
use futures::StreamExt;
use tokio::io::AsyncBufReadExt;
use tokio::runtime::Handle;

use super::worker::{
    Frame, TemplateRequest, TokenizeRequest, WorkerError, FLUSH_TOKENS, HEARTBEAT, SEQUENCE_HEADER,
};

/// Crashes within [`CRASH_WINDOW`] that mark a model failed.
pub const CRASHES_TO_FAIL: usize = 5;
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// The first pause before a restart; it doubles per crash in a row, up
/// to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A stream silent this long (three heartbeats) has a dead worker.
const SILENCE: Duration = Duration::from_secs(3);
/// Time for a new worker to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest frame line a stream may send (deltas are at most 16
/// tokens; this bounds what a broken or hostile peer can make us hold).
const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Stderr lines kept per worker, for crash reports.
const STDERR_LINES: usize = 20;
/// The prefix of errors that mean the worker went away mid-answer.
pub const WORKER_CRASHED: &str = "worker_crashed";
/// The prefix of errors of a model marked failed.
pub const MODEL_FAILED: &str = "model_failed";

/// A backend whose models run in worker processes.
pub struct WorkerBackend {
    info: BackendInfo,
    library: PathBuf,
    program: PathBuf,
    sockets: PathBuf,
    handle: Handle,
    stall: Duration,
    /// When workers of each load (file and parameters) crashed, kept
    /// across loads: a file whose worker dies while loading is loaded
    /// afresh by every request, and must still be marked failed after
    /// repeated crashes.
    crashes: Mutex<std::collections::HashMap<String, Crashes>>,
}

/// When a model file's workers crashed, newest last, and the last error.
type Crashes = Arc<Mutex<CrashLog>>;

#[derive(Default)]
struct CrashLog {
    times: VecDeque<Instant>,
    last_error: Option<String>,
}

impl WorkerBackend {
    /// `library` is the backend's shared library; workers are started as
    /// `program worker --library … --socket …` with sockets in `sockets`.
    /// A generation whose engine makes no progress for `stall` has its
    /// worker killed.
    pub fn new(
        info: BackendInfo,
        library: PathBuf,
        program: PathBuf,
        sockets: PathBuf,
        handle: Handle,
        stall: Duration,
    ) -> Self {
        WorkerBackend {
            info,
            library,
            program,
            sockets,
            handle,
            stall,
            crashes: Mutex::default(),
        }
    }
}

impl Backend for WorkerBackend {
    fn info(&self) -> BackendInfo {
        self.info.clone()
    }

    fn load(
        &self,
        request: &LoadRequest,
        progress: &mut dyn FnMut(f32) -> bool,
    ) -> BackendResult<Box<dyn Model>> {
        let crashes = {
            let mut logs = self.crashes.lock().unwrap_or_else(|e| e.into_inner());
            // Logs no load holds and with no crash left in the window go.
            logs.retain(|_, log| {
                Arc::strong_count(log) > 1 || {
                    let log = log.lock().unwrap_or_else(|e| e.into_inner());
                    log.times
                        .back()
                        .is_some_and(|t| t.elapsed() <= CRASH_WINDOW)
                }
            });
            let key = serde_json::to_string(request).unwrap_or_else(|_| request.path.clone());
            logs.entry(key).or_default().clone()
        };
        let supervisor = Arc::new(Supervisor {
            library: self.library.clone(),
            program: self.program.clone(),
            sockets: self.sockets.clone(),
            request: request.clone(),
            state: tokio::sync::Mutex::new(State::default()),
            crashes,
            stderr: Arc::default(),
            sequence: AtomicU64::new(0),
            last_crashed: Mutex::default(),
            stall: self.stall,
        });
        let info = self.handle.block_on(supervisor.ready())?;
        progress(1.0);
        Ok(Box::new(WorkerModel {
            supervisor,
            info,
            handle: self.handle.clone(),
        }))
    }
}

#[derive(Default)]
struct State {
    worker: Option<Running>,
    /// Set once the model failed too often.
    failed: Option<String>,
}

/// A started worker with its model loaded.
struct Running {
    child: tokio::process::Child,
    client: reqwest::Client,
    socket: PathBuf,
    info: ModelInfo,
    pid: u32,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.socket);
    }
}

struct Supervisor {
    library: PathBuf,
    program: PathBuf,
    sockets: PathBuf,
    request: LoadRequest,
    state: tokio::sync::Mutex<State>,
    /// When the model's workers crashed (also those of earlier loads of
    /// the same file), newest last.
    crashes: Crashes,
    stderr: Arc<Mutex<VecDeque<String>>>,
    sequence: AtomicU64,
    /// The last worker counted as crashed, so that requests that saw the
    /// same crash count it once.
    last_crashed: Mutex<Option<u32>>,
    /// How long an engine may go without progress.
    stall: Duration,
}

impl Supervisor {
    fn last_stderr(&self) -> Option<String> {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .back()
            .cloned()
    }

    /// The worker's client and model, starting (and loading) the worker
    /// first when none runs.
    async fn ready(&self) -> BackendResult<ModelInfo> {
        self.client().await.map(|(_, info, _)| info)
    }

    async fn client(&self) -> BackendResult<(reqwest::Client, ModelInfo, u32)> {
        let mut state = self.state.lock().await;
        if let Some(reason) = &state.failed {
            return Err(BackendError::Internal(format!("{MODEL_FAILED}: {reason}")));
        }
        if let Some(running) = state.worker.as_mut() {
            if matches!(running.child.try_wait(), Ok(None)) {
                return Ok((running.client.clone(), running.info.clone(), running.pid));
            }
            let pid = running.pid;
            state.worker = None;
            drop(state);
            self.crashed(pid, "the worker process exited");
            state = self.state.lock().await;
            if let Some(reason) = &state.failed {
                return Err(BackendError::Internal(format!("{MODEL_FAILED}: {reason}")));
            }
        }
        if self.recent_crashes() >= CRASHES_TO_FAIL {
            // Its workers died this often in earlier loads of the file.
            let reason = self.failure();
            state.failed = Some(reason.clone());
            return Err(BackendError::Internal(format!("{MODEL_FAILED}: {reason}")));
        }
        let pause = self.backoff();
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let running = match self.start().await {
            Ok(running) => running,
            // A worker that dies while starting or loading counts as a
            // crash as one that dies later does.
            Err(Start::Crashed { pid, error }) => {
                let recent = self.note_crash(pid, &error.to_string());
                if recent >= CRASHES_TO_FAIL {
                    let reason = self.failure();
                    tracing::error!(model = %self.request.path, "model marked failed: {reason}");
                    state.failed = Some(reason.clone());
                    return Err(BackendError::Internal(format!("{MODEL_FAILED}: {reason}")));
                }
                return Err(error);
            }
            Err(Start::Failed(error)) => return Err(error),
        };
        let answer = (running.client.clone(), running.info.clone(), running.pid);
        state.worker = Some(running);
        Ok(answer)
    }

    /// The pause before the next start: none after a clean run, then
    /// doubling per crash within the window.
    fn backoff(&self) -> Duration {
        let crashes = self.recent_crashes();
        if crashes == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (crashes - 1).min(16);
        (FIRST_BACKOFF * factor).min(MAX_BACKOFF)
    }

    fn recent_crashes(&self) -> usize {
        let mut crashes = self.crashes.lock().unwrap_or_else(|e| e.into_inner());
        while crashes
            .times
            .front()
            .is_some_and(|t| t.elapsed() > CRASH_WINDOW)
        {
            crashes.times.pop_front();
        }
        crashes.times.len()
    }

    /// Counts a crash of worker `pid` once; returns the crashes within
    /// the window.
    fn note_crash(&self, pid: u32, what: &str) -> usize {
        {
            let mut last = self.last_crashed.lock().unwrap_or_else(|e| e.into_inner());
            if *last == Some(pid) {
                return self.recent_crashes();
            }
            *last = Some(pid);
        }
        let stderr = self.last_stderr();
        {
            let mut crashes = self.crashes.lock().unwrap_or_else(|e| e.into_inner());
            crashes.times.push_back(Instant::now());
            crashes.last_error = Some(stderr.clone().unwrap_or_else(|| what.to_owned()));
        }
        let recent = self.recent_crashes();
        tracing::warn!(
            model = %self.request.path,
            crashes = recent,
            stderr = stderr.as_deref().unwrap_or(""),
            "model worker crashed: {what}"
        );
        recent
    }

    /// Why the model is marked failed: its crashes and the last error.
    fn failure(&self) -> String {
        let last = self
            .crashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error
            .clone()
            .unwrap_or_default();
        format!(
            "its worker crashed {} times within {} s; last error: {last}",
            self.recent_crashes(),
            CRASH_WINDOW.as_secs(),
        )
    }

    /// Records that worker `pid` crashed: it is forgotten (and killed),
    /// and the model is marked failed after too many crashes.
    fn crashed(&self, pid: u32, what: &str) {
        let recent = self.note_crash(pid, what);
        if let Ok(mut state) = self.state.try_lock() {
            if state.worker.as_ref().is_some_and(|w| w.pid == pid) {
                state.worker = None;
            }
            if recent >= CRASHES_TO_FAIL && state.failed.is_none() {
                let reason = self.failure();
                tracing::error!(model = %self.request.path, "model marked failed: {reason}");
                state.failed = Some(reason);
            }
        }
    }

    /// Starts a worker, waits for its socket and loads the model.
    async fn start(&self) -> Result<Running, Start> {
        let n = NEXT_SOCKET.fetch_add(1, Ordering::Relaxed);
        let socket = self
            .sockets
            .join(format!("{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        // This very executable, also once its file was replaced (an
        // upgrade while the host runs): a worker must speak the host's
        // protocol. Its own name stays in the process list.
        let this = Path::new("/proc/self/exe");
        let mut command = if this.exists() {
            let mut command = tokio::process::Command::new(this);
            command.arg0(&self.program);
            command
        } else {
            tokio::process::Command::new(&self.program)
        };
        command
            .arg("worker")
            .arg("--library")
            .arg(&self.library)
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // Its own process group, so a signal to the host's group
                // (a terminal's ^C) does not reach it unasked; and it dies
                // when the host does.
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // Out of memory, the kernel's killer takes a worker first:
                // an engine (or a chat template) that eats the machine
                // ends only itself. Raising one's own score needs no
                // privilege.
                let path = b"/proc/self/oom_score_adj\0";
                let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    let score = b"1000";
                    libc::write(fd, score.as_ptr().cast(), score.len());
                    libc::close(fd);
                }
                Ok(())
            });
        }
        // The parent-death signal fires when the *thread* that forked
        // ends, and blocking-pool threads end when idle: fork on one of
        // the runtime's worker threads, which live as long as the host.
        let cannot = |e: &dyn std::fmt::Display| {
            Start::Failed(BackendError::Internal(format!(
                "cannot start a worker: {e}"
            )))
        };
        let mut child = tokio::spawn(async move { command.spawn() })
            .await
            .map_err(|e| cannot(&e))?
            .map_err(|e| cannot(&e))?;
        let pid = child.id().unwrap_or(0);
        if let Some(stderr) = child.stderr.take() {
            let lines = self.stderr.clone();
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    tracing::debug!(target: "corral::worker", pid, "{line}");
                    let mut kept = lines.lock().unwrap_or_else(|e| e.into_inner());
                    if kept.len() == STDERR_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(without_paths(&strip_ansi(&line)));
                }
            });
        }
        let client = reqwest::Client::builder()
            .unix_socket(socket.clone())
            .no_proxy()
            .build()
            .map_err(|e| {
                Start::Failed(BackendError::Internal(format!(
                    "cannot make a worker client: {e}"
                )))
            })?;
        let crashed = |error: BackendError| Start::Crashed { pid, error };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(crashed(BackendError::Internal(format!(
                    "the worker exited at start ({status}): {}",
                    self.last_stderr().unwrap_or_default()
                ))));
            }
            if client.get(url("/health")).send().await.is_ok() {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.start_kill();
                return Err(crashed(BackendError::Internal(
                    "the worker did not open its socket in time".into(),
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let answer = client
            .post(url("/load"))
            .json(&self.request)
            .send()
            .await
            .map_err(|e| crashed(self.lost(&mut child, &format!("loading: {e}"))))?;
        let info: ModelInfo = match answer.status().as_u16() {
            200 => answer.json().await.map_err(|e| {
                Start::Failed(BackendError::Internal(format!("the worker's answer: {e}")))
            })?,
            _ => {
                let _ = child.start_kill();
                return Err(Start::Failed(worker_error(answer).await));
            }
        };
        tracing::info!(pid, model = %self.request.path, "model worker started");
        Ok(Running {
            child,
            client,
            socket,
            info,
            pid,
        })
    }

    fn lost(&self, child: &mut tokio::process::Child, what: &str) -> BackendError {
        let _ = child.start_kill();
        BackendError::Internal(format!(
            "the worker stopped while {what}; last error: {}",
            self.last_stderr().unwrap_or_default()
        ))
    }
}

static NEXT_SOCKET: AtomicU64 = AtomicU64::new(0);

fn url(path: &str) -> String {
    format!("http://worker{path}")
}

/// Terminal colour codes out of a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `line` with each absolute path cut to its last part: a worker's last
/// words reach users (as a failed model's reason), and where the engine
/// was built or the server keeps its files is none of theirs. The log
/// keeps the whole line.
fn without_paths(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find('/') {
        let starts_word = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || "'\"`([{=:,".contains(c));
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || "'\"`)]},".contains(c))
            .map_or(rest.len(), |n| at + n);
        let word = &rest[at..end];
        out.push_str(&rest[..at]);
        if starts_word && word[1..].contains('/') {
            out.push_str(word.rsplit('/').next().unwrap_or_default());
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

async fn worker_error(response: reqwest::Response) -> BackendError {
    let status = response.status();
    match response.json::<WorkerError>().await {
        Ok(e) => e.error,
        Err(_) => BackendError::Internal(format!("the worker answered {status}")),
    }
}

/// Why a worker could not be made ready.
enum Start {
    /// It could not be started, or it refused the model (a clean answer).
    Failed(BackendError),
    /// Worker `pid` died or hung while starting or loading.
    Crashed { pid: u32, error: BackendError },
}

/// A model in a worker process.
struct WorkerModel {
    supervisor: Arc<Supervisor>,
    info: ModelInfo,
    handle: Handle,
}

/// How one attempt at a generation ended.
enum Attempt {
    Finished(BackendResult<GenerateSummary>),
    /// Worker `pid` went away; `produced` says whether text had been
    /// sent.
    Crashed {
        pid: u32,
        produced: bool,
        what: String,
    },
}

impl WorkerModel {
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> BackendResult<T> {
        for attempt in 0..2 {
            let (client, _, pid) = self.supervisor.client().await?;
            match client.post(url(path)).json(body).send().await {
                Ok(r) if r.status().is_success() => {
                    // A model's template can make a huge prompt; it stops
                    // here rather than in the host's memory.
                    return super::nodes::read_json(r, super::nodes::LARGE_ANSWER, "the worker")
                        .await;
                }
                Ok(r) => return Err(worker_error(r).await),
                Err(e) if attempt == 0 => self.supervisor.crashed(pid, &e.to_string()),
                Err(e) => {
                    self.supervisor.crashed(pid, &e.to_string());
                    return Err(BackendError::Internal(format!("{WORKER_CRASHED}: {e}")));
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    async fn attempt(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
        started_sent: &mut bool,
    ) -> BackendResult<Attempt> {
        let (client, _, pid) = self.supervisor.client().await?;
        let sequence = format!(
            "{}",
            self.supervisor.sequence.fetch_add(1, Ordering::Relaxed)
        );
        let response = match client
            .post(url("/generate"))
            .header(SEQUENCE_HEADER, &sequence)
            .json(request)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => return Ok(Attempt::Finished(Err(worker_error(r).await))),
            Err(e) => {
                return Ok(Attempt::Crashed {
                    pid,
                    produced: false,
                    what: e.to_string(),
                })
            }
        };
        let cancel_call = {
            let client = client.clone();
            move || -> futures::future::BoxFuture<'static, ()> {
                let request = client.post(url(&format!("/cancel/{sequence}")));
                Box::pin(async move {
                    let _ = request.send().await;
                })
            }
        };
        let limits = Limits::none(self.supervisor.stall);
        let followed = follow(response, sink, cancel, started_sent, limits, &cancel_call).await;
        Ok(match followed {
            Followed::Finished(result) => Attempt::Finished(result),
            Followed::Lost { produced, what } => Attempt::Crashed {
                pid,
                produced,
                what,
            },
            Followed::Stalled { produced } => {
                // A stuck engine cannot be stopped from inside; its
                // process can. It is reaped when the supervisor drops it.
                // SAFETY: kill(2) with a pid of our own child, not yet
                // reaped, so it cannot name another process.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
                Attempt::Crashed {
                    pid,
                    produced,
                    what: format!(
                        "its engine made no progress for {} s and was killed",
                        self.supervisor.stall.as_secs_f32()
                    ),
                }
            }
        })
    }
}

/// How following a `/generate` stream ended.
pub(super) enum Followed {
    /// With `done` or `error`.
    Finished(BackendResult<GenerateSummary>),
    /// The stream broke off or went silent; `produced` says whether text
    /// had been passed on.
    Lost { produced: bool, what: String },
    /// Frames came, but the engine made no progress for the stall limit.
    Stalled { produced: bool },
}

/// Limits on a followed stream.
#[derive(Clone, Copy)]
pub(super) struct Limits {
    /// A stream whose engine makes no progress (no text and no new cancel
    /// checks) this long ends as [`Followed::Stalled`].
    pub stall: Option<Duration>,
    /// Bytes of text a stream may send in all; past them it is lost.
    pub text_bytes: Option<usize>,
    /// Tokens a stream may send and count in all (the request's
    /// `max_tokens`); past them it is lost. The counts it reports are
    /// capped by it and, for the prompt, by `prompt_tokens`.
    pub tokens: Option<u32>,
    /// The most prompt tokens a stream may report.
    pub prompt_tokens: Option<u32>,
    /// How long a stream may go on after its cancel was sent; past it,
    /// it is no longer followed and ends as cancelled, with what it sent.
    pub cancel_grace: Option<Duration>,
}

impl Limits {
    /// No limit: a worker process of this host.
    fn none(stall: Duration) -> Self {
        Limits {
            stall: Some(stall),
            text_bytes: None,
            tokens: None,
            prompt_tokens: None,
            cancel_grace: None,
        }
    }

    fn completion(&self, counted: u32) -> u32 {
        self.tokens.map_or(counted, |most| counted.min(most))
    }

    fn prompt(&self, reported: u32) -> u32 {
        self.prompt_tokens
            .map_or(reported, |most| reported.min(most))
    }
}

/// Passes a `/generate` stream's frames on to `sink` until it ends,
/// calling `send_cancel` (in the background) once when `cancel` fires.
pub(super) async fn follow(
    response: reqwest::Response,
    sink: &mut dyn FnMut(TokenEvent),
    cancel: &CancelToken,
    started_sent: &mut bool,
    limits: Limits,
    send_cancel: &(dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync),
) -> Followed {
    let begun = Instant::now();
    let mut text_bytes = 0usize;
    let mut tokens = 0u64;
    let mut prompt_seen = 0u32;
    let mut body = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    let mut produced = false;
    let mut cancel_sent: Option<Instant> = None;
    let mut poll = tokio::time::interval(Duration::from_millis(25));
    let mut last_frame = Instant::now();
    let mut last_progress = Instant::now();
    let mut last_polls = 0;
    loop {
        // Whole lines first, read in one pass over the buffer.
        let mut read = 0;
        while let Some(at) = buffer[read..].iter().position(|b| *b == b'\n') {
            let line = &buffer[read..=read + at];
            read += at + 1;
            let frame: Frame = match serde_json::from_slice(line) {
                Ok(frame) => frame,
                Err(e) => {
                    return Followed::Lost {
                        produced,
                        what: format!("an unreadable frame: {e}"),
                    }
                }
            };
            last_frame = Instant::now();
            match frame {
                Frame::Started { prompt_tokens } => {
                    last_progress = Instant::now();
                    prompt_seen = limits.prompt(prompt_tokens);
                    if !*started_sent {
                        *started_sent = true;
                        sink(TokenEvent::Started {
                            prompt_tokens: prompt_seen,
                        });
                    }
                }
                Frame::Delta {
                    text,
                    tokens: batched,
                } => {
                    last_progress = Instant::now();
                    produced = true;
                    text_bytes += text.len();
                    tokens += u64::from(batched.max(1));
                    if limits.text_bytes.is_some_and(|limit| text_bytes > limit) {
                        return Followed::Lost {
                            produced,
                            what: "it sent more text than the request allows".into(),
                        };
                    }
                    // An engine that stops at `max_tokens` may send the text
                    // it held back (the start of a stop string) as one
                    // more event.
                    if limits
                        .tokens
                        .is_some_and(|limit| tokens > u64::from(limit) + 1)
                    {
                        return Followed::Lost {
                            produced,
                            what: "it sent more tokens than the request allows".into(),
                        };
                    }
                    // A delta batches up to FLUSH_TOKENS of the engine's
                    // text events. All but one are passed on as empty text
                    // ahead of it, so that a generation that never reaches
                    // `done` is counted by its tokens, as in process, and
                    // the text carries their count.
                    let batched = usize::try_from(batched).unwrap_or(usize::MAX);
                    for _ in 1..batched.min(FLUSH_TOKENS) {
                        sink(TokenEvent::Text {
                            text: String::new(),
                        });
                    }
                    sink(TokenEvent::Text { text });
                }
                Frame::Heartbeat { polls } => {
                    if polls != last_polls {
                        last_polls = polls;
                        last_progress = Instant::now();
                    }
                }
                Frame::Done { mut summary } => {
                    summary.completion_tokens = limits.completion(summary.completion_tokens);
                    summary.prompt_tokens = limits.prompt(summary.prompt_tokens);
                    summary.cached_tokens = summary.cached_tokens.min(summary.prompt_tokens);
                    return Followed::Finished(Ok(summary));
                }
                Frame::Error { error, .. } => return Followed::Finished(Err(error)),
            }
        }
        buffer.drain(..read);
        // Checked on every turn, not only on the timer's: a stream that
        // is always ready would never let the timer run.
        if cancel.is_cancelled() && cancel_sent.is_none() {
            cancel_sent = Some(Instant::now());
            tokio::spawn(send_cancel());
        }
        if let (Some(at), Some(grace)) = (cancel_sent, limits.cancel_grace) {
            if at.elapsed() > grace {
                // Stopped here, with what it sent; it may go on there.
                let total = begun.elapsed().as_secs_f64();
                return Followed::Finished(Ok(GenerateSummary {
                    finish_reason: FinishReason::Cancelled,
                    prompt_tokens: prompt_seen,
                    completion_tokens: limits.completion(u32::try_from(tokens).unwrap_or(u32::MAX)),
                    truncated_tokens: 0,
                    cached_tokens: 0,
                    time_to_first_token: total,
                    total_time: total,
                }));
            }
        }
        if limits
            .stall
            .is_some_and(|stall| last_progress.elapsed() > stall)
        {
            return Followed::Stalled { produced };
        }
        if last_frame.elapsed() > SILENCE {
            return Followed::Lost {
                produced,
                what: format!(
                    "no frame for {} s (heartbeats are every {} s)",
                    SILENCE.as_secs(),
                    HEARTBEAT.as_secs()
                ),
            };
        }
        tokio::select! {
            // Frames that arrived first: a late timer tick must not make a
            // busy stream look silent.
            biased;
            chunk = body.next() => match chunk {
                Some(Ok(bytes)) => {
                    buffer.extend_from_slice(&bytes);
                    if buffer.len() > MAX_FRAME_BYTES {
                        return Followed::Lost {
                            produced,
                            what: format!("a frame longer than {MAX_FRAME_BYTES} bytes"),
                        };
                    }
                }
                Some(Err(e)) => return Followed::Lost { produced, what: e.to_string() },
                None => return Followed::Lost {
                    produced,
                    what: "the stream ended without done or error".into(),
                },
            },
            _ = poll.tick() => {}
        }
    }
}

impl Model for WorkerModel {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        self.handle.block_on(async {
            let mut started_sent = false;
            for attempt in 0..2 {
                match self
                    .attempt(request, sink, cancel, &mut started_sent)
                    .await?
                {
                    Attempt::Finished(result) => return result,
                    Attempt::Crashed {
                        pid,
                        produced,
                        what,
                    } => {
                        self.supervisor.crashed(pid, &what);
                        if produced || attempt == 1 || cancel.is_cancelled() {
                            let last = self.supervisor.last_stderr();
                            return Err(BackendError::Internal(format!(
                                "{WORKER_CRASHED}: the model's worker process stopped ({what}){}",
                                last.map(|l| format!("; its last words: {l}"))
                                    .unwrap_or_default()
                            )));
                        }
                        tracing::info!(
                            "retrying a generation that had no text yet on a new worker"
                        );
                    }
                }
            }
            unreachable!("the second attempt returns")
        })
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

/// Whether sockets in `dir` fit the 107 bytes a Unix socket path may
/// have (with room for the name).
pub fn socket_dir_fits(dir: &Path) -> bool {
    dir.as_os_str().len() + 24 < 108
}

/// The same backends, each running its models in worker processes
/// (started as this executable's `worker` command), with sockets in a
/// private folder of the data dir.
pub fn in_workers(
    backends: super::backends::BackendSet,
    data_dir: &Path,
    stall: Duration,
) -> anyhow::Result<super::backends::BackendSet> {
    use std::os::unix::fs::DirBuilderExt;
    let mut sockets = super::worker::socket_dir(data_dir);
    // In the shared temporary folder, a name no one can guess, made new
    // here: a folder someone else made in advance would let them take the
    // workers' sockets.
    let shared = !socket_dir_fits(&sockets);
    if shared {
        sockets = std::env::temp_dir().join(format!(
            "corral-workers-{}-{}",
            std::process::id(),
            crate::model::new_id()
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(!shared)
        .mode(0o700)
        .create(&sockets)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", sockets.display()))?;
    let program = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find the corral executable: {e}"))?;
    let handle = Handle::current();
    let mut out = super::backends::BackendSet::default();
    for loaded in backends.all() {
        let backend = WorkerBackend::new(
            loaded.info.clone(),
            loaded.path.clone(),
            program.clone(),
            sockets.clone(),
            handle.clone(),
            stall,
        );
        out.insert(Arc::new(backend), loaded.path.clone());
    }
    out.add_problems(backends.problems());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cut_to_their_last_part() {
        assert_eq!(
            without_paths(
                "/home/ci/.cargo/registry/src/llama-cpp-sys-2/llama.cpp/ggml/src/ggml.c:1234: \
                 GGML_ASSERT(n <= 8) failed"
            ),
            "ggml.c:1234: GGML_ASSERT(n <= 8) failed"
        );
        assert_eq!(
            without_paths("cannot open '/srv/corral/models/part-2.gguf' (read 4/8 bytes)"),
            "cannot open 'part-2.gguf' (read 4/8 bytes)"
        );
        assert_eq!(without_paths("a/b and 1/2 stay"), "a/b and 1/2 stay");
        assert_eq!(without_paths("/"), "/");
    }

    #[test]
    fn colour_codes_are_stripped_from_stderr() {
        assert_eq!(
            strip_ansi("\u{1b}[31mGGML_ASSERT\u{1b}[0m failed"),
            "GGML_ASSERT failed"
        );
    }
}
