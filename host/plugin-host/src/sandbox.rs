//! What one plugin instance runs inside: its store data, WASI with nothing
//! of the host's (no files, no environment, no sockets), outbound HTTP
//! through [`HttpGate`], a memory cap, a CPU-time budget per call, and
//! stdout/stderr kept for the log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_hooks::{HookCaller, HostServices};
use serde_json::{Map, Value};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::manifest::Capability;
use crate::net::{HttpGate, HttpPolicy, NetworkWait};

/// What stdout and stderr keep per instance; the rest is dropped.
const OUTPUT_CAP: usize = 64 * 1024;
/// Resource handles one instance may hold at once.
const MAX_HANDLES: usize = 10_000;
/// The largest set of HTTP header fields a plugin may build.
const MAX_FIELDS_BYTES: usize = 64 * 1024;
/// Log lines (plugin `log` calls and stdout/stderr lines together) per
/// instance; later ones are dropped with one warning.
const LOG_LINES: u32 = 200;
/// Longest log line kept.
pub(crate) const LOG_LINE_BYTES: usize = 4096;

/// What a plugin's instances share: who it is, what it was granted, its
/// settings and limits. Rebuilt when a technician changes the settings.
pub(crate) struct PluginEnv {
    pub(crate) id: Arc<str>,
    granted: u8,
    /// Saved settings with defaults filled in.
    pub(crate) config: Map<String, Value>,
    pub(crate) kv_quota_bytes: u64,
    pub(crate) memory_bytes: usize,
    pub(crate) call_budget: Duration,
    /// Where `http` may go; `None` when it is not granted.
    http: Option<Arc<HttpPolicy>>,
}

impl PluginEnv {
    pub(crate) fn new(
        id: &str,
        granted: &[Capability],
        config: Map<String, Value>,
        kv_quota_bytes: u64,
        memory_bytes: usize,
        call_budget: Duration,
        http: Option<Arc<HttpPolicy>>,
    ) -> Self {
        PluginEnv {
            id: id.into(),
            granted: granted.iter().fold(0, |bits, c| bits | c.bit()),
            config,
            kv_quota_bytes,
            memory_bytes,
            call_budget,
            http,
        }
    }

    pub(crate) fn is_granted(&self, capability: Capability) -> bool {
        self.granted & capability.bit() != 0
    }
}

/// Wall-clock time of the current call minus the time spent waiting in
/// host calls (a model answering, the store) and, up to a cap, for HTTP
/// responses, so a plugin pays only for its own work.
pub(crate) struct CallClock {
    started: Instant,
    in_host: Duration,
    /// When the host call under way began.
    in_host_since: Option<Instant>,
    network: Arc<NetworkWait>,
    pub(crate) budget: Duration,
    pub(crate) timed_out: bool,
}

impl CallClock {
    pub(crate) fn start(&mut self) {
        self.started = Instant::now();
        self.in_host = Duration::ZERO;
        self.in_host_since = None;
        self.network.reset();
        self.timed_out = false;
    }

    pub(crate) fn spent(&self) -> Duration {
        let waiting = self.in_host_since.map_or(Duration::ZERO, |s| s.elapsed());
        self.started
            .elapsed()
            .saturating_sub(self.in_host + waiting + self.network.credit())
    }

    /// A host call begins; pass what this returns to [`Self::host_time`]
    /// when it ends.
    pub(crate) fn enter_host(&mut self) -> Instant {
        let now = Instant::now();
        self.in_host_since = Some(now);
        now
    }

    /// Adds time that a host call took, to be left out of the budget.
    pub(crate) fn host_time(&mut self, since: Instant) {
        self.in_host += since.elapsed();
        self.in_host_since = None;
    }
}

/// The store's memory and table caps ([`StoreLimits`]), remembering
/// whether it refused a growth so a failure can be reported as "out of
/// memory" rather than as a bare trap.
pub(crate) struct Limiter {
    inner: StoreLimits,
    pub(crate) memory_refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let r = self.inner.memory_growing(current, desired, maximum);
        if !matches!(r, Ok(true)) {
            self.memory_refused = true;
        }
        r
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_refused = true;
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// The data of one plugin instance's store.
pub(crate) struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    http_gate: HttpGate,
    pub(crate) limiter: Limiter,
    pub(crate) env: Arc<PluginEnv>,
    pub(crate) caller: HookCaller,
    /// The model of the generation (none for route requests).
    pub(crate) model: Option<String>,
    pub(crate) services: Arc<dyn HostServices>,
    pub(crate) clock: CallClock,
    log_lines: u32,
    denied_logged: u8,
    stdout: Captured,
    stderr: Captured,
    /// The last lines the plugin wrote to stderr (a Rust panic message
    /// lands there), for failure reports.
    stderr_tail: Vec<String>,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_gate,
        }
    }
}

/// A fresh store for one generation or route request.
pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    env: Arc<PluginEnv>,
    caller: HookCaller,
    model: Option<String>,
    services: Arc<dyn HostServices>,
) -> Store<PluginState> {
    let stdout = Captured::default();
    let stderr = Captured::default();
    let mut wasi = WasiCtxBuilder::new();
    // The builder starts with stdin closed, no environment, arguments or
    // preopened directories; sockets are switched off and every address
    // denied besides.
    wasi.stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    let limits = StoreLimitsBuilder::new()
        .memory_size(env.memory_bytes)
        .table_elements(crate::engine::MAX_TABLE_ELEMENTS)
        // A component built by wit-component is a handful of core
        // instances; these leave room for that and no more.
        .instances(crate::engine::MAX_CORE_INSTANCES as usize)
        .tables(64)
        .memories(8)
        .trap_on_grow_failure(true)
        .build();
    let budget = env.call_budget;
    let network = Arc::new(NetworkWait::default());
    let http_gate = HttpGate::new(env.id.clone(), env.http.clone(), network.clone());
    // Handles (streams, fields, requests) and header maps live on the host,
    // outside the plugin's memory cap: both are kept small.
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_HANDLES);
    let mut http = WasiHttpCtx::new();
    http.set_field_size_limit(MAX_FIELDS_BYTES);
    let state = PluginState {
        wasi: wasi.build(),
        table,
        http,
        http_gate,
        limiter: Limiter {
            inner: limits,
            memory_refused: false,
        },
        env,
        caller,
        model,
        services,
        clock: CallClock {
            started: Instant::now(),
            in_host: Duration::ZERO,
            in_host_since: None,
            network,
            budget,
            timed_out: false,
        },
        log_lines: 0,
        denied_logged: 0,
        stdout,
        stderr,
        stderr_tail: Vec::new(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // Called at every tick while the plugin runs: it yields to the
    // executor (so a busy plugin never holds a tokio worker for more than
    // a tick) and stops the call once the plugin's own time is spent.
    store.epoch_deadline_callback(|mut cx| {
        let clock = &mut cx.data_mut().clock;
        if clock.spent() >= clock.budget {
            clock.timed_out = true;
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
    store.set_epoch_deadline(1);
    store
}

/// Starts the clock of a call.
pub(crate) fn start_call(store: &mut Store<PluginState>) {
    store.data_mut().clock.start();
    store.data_mut().limiter.memory_refused = false;
    store.set_epoch_deadline(1);
}

impl PluginState {
    /// Whether a log line may still be written; warns once when not.
    fn take_log_line(&mut self) -> bool {
        self.log_lines += 1;
        if self.log_lines == LOG_LINES + 1 {
            tracing::warn!(
                target: "corral::plugin",
                plugin = %self.env.id,
                "more than {LOG_LINES} log lines in one generation; dropping the rest"
            );
        }
        self.log_lines <= LOG_LINES
    }

    pub(crate) fn write_log(&mut self, level: tracing::Level, message: &str) {
        if !self.take_log_line() {
            return;
        }
        let message = clip(message, LOG_LINE_BYTES);
        let plugin = &*self.env.id;
        match level {
            tracing::Level::ERROR => tracing::error!(target: "corral::plugin", plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(target: "corral::plugin", plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(target: "corral::plugin", plugin, "{message}"),
            _ => tracing::debug!(target: "corral::plugin", plugin, "{message}"),
        }
    }

    /// Checks a capability; logs a refusal once per instance and
    /// capability. The `Err` is what the plugin is told.
    pub(crate) fn check(&mut self, capability: Capability) -> Result<(), String> {
        if self.env.is_granted(capability) {
            return Ok(());
        }
        let message = format!("capability `{capability}` is not granted");
        if self.denied_logged & capability.bit() == 0 {
            self.denied_logged |= capability.bit();
            tracing::warn!(target: "corral::plugin", plugin = %self.env.id, "{message}");
        }
        Err(message)
    }

    /// The last lines the plugin wrote to stderr, joined (a Rust panic
    /// reads `thread '<unnamed>' panicked at src/lib.rs:3:5: message`).
    pub(crate) fn stderr_tail(&self) -> Option<String> {
        (!self.stderr_tail.is_empty()).then(|| self.stderr_tail.join(" "))
    }

    /// Moves what the plugin wrote to stdout and stderr into the log.
    pub(crate) fn flush_output(&mut self) {
        for (name, captured) in [
            ("stdout", self.stdout.clone()),
            ("stderr", self.stderr.clone()),
        ] {
            let Some((bytes, dropped)) = captured.take() else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                if name == "stderr" && !line.starts_with("note: run with `RUST_BACKTRACE") {
                    if self.stderr_tail.len() == 2 {
                        self.stderr_tail.remove(0);
                    }
                    self.stderr_tail.push(clip(line.trim(), 300).to_string());
                }
                if self.take_log_line() {
                    tracing::info!(
                        target: "corral::plugin",
                        plugin = %self.env.id,
                        stream = name,
                        "{}",
                        clip(line, LOG_LINE_BYTES)
                    );
                }
            }
            if dropped > 0 {
                tracing::warn!(
                    target: "corral::plugin",
                    plugin = %self.env.id,
                    "dropped {dropped} bytes of {name} past {OUTPUT_CAP} bytes"
                );
            }
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A capped in-memory stdout/stderr. Unlike wasmtime-wasi's
/// `MemoryOutputPipe` it never fails a write: past the cap the bytes are
/// counted and dropped, so printing too much does not kill a plugin.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<CapturedBytes>>);

#[derive(Default)]
struct CapturedBytes {
    bytes: Vec<u8>,
    dropped: usize,
}

impl Captured {
    fn push(&self, data: &[u8]) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = OUTPUT_CAP.saturating_sub(c.bytes.len());
        let keep = data.len().min(room);
        c.bytes.extend_from_slice(&data[..keep]);
        c.dropped += data.len() - keep;
    }

    fn take(&self) -> Option<(Vec<u8>, usize)> {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if c.bytes.is_empty() && c.dropped == 0 {
            return None;
        }
        let dropped = std::mem::take(&mut c.dropped);
        Some((std::mem::take(&mut c.bytes), dropped))
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Captured {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(OUTPUT_CAP)
    }
}

#[async_trait::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
