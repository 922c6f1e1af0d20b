//! One call into a plugin: start its instance if needed, run the export
//! under the plugin's limits, check the answer, and count the outcome.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_hooks::{HookCaller, HookContext};
use wasmtime::Store;

use crate::calls::{Call, Reply};
use crate::host::{Inner, Installed};
use crate::sandbox::{self, PluginState};
use crate::wit;

/// A plugin's instance for one generation or route request.
pub(crate) struct Live {
    store: Store<PluginState>,
    instance: wit::Instance,
}

impl Live {
    /// Gives an instance started ahead of time the request it now serves.
    fn bind(&mut self, caller: &HookCaller, ctx: Option<&HookContext>) {
        let state = self.store.data_mut();
        state.caller = caller.clone();
        state.model = ctx.map(|c| c.model.clone());
        self.instance.set_context(ctx);
    }
}

/// One instance of a plugin started ahead of its next generation, so that
/// the generation's first call does not wait for it. It has never been
/// called, so it holds nothing of any earlier request; it is started with
/// the plugin's settings of the moment, and a change of settings installs
/// the plugin anew (with no spare).
#[derive(Default)]
pub(crate) struct Spare {
    ready: Mutex<Option<Live>>,
    filling: AtomicBool,
}

impl Spare {
    fn take(&self) -> Option<Live> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Starts a new spare in the background unless one is ready or being
    /// started. Called when a generation ends (and at install), not on
    /// a request's way, so that waking a worker thread does not delay a
    /// hook. A spare that fails to start is dropped quietly: the next
    /// generation then starts its own instance, and that failure counts.
    pub(crate) fn refill(&self, host: &Inner, plugin: &Arc<Installed>) {
        if plugin.health.is_disabled() || self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        if self
            .ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            self.filling.store(false, Ordering::Release);
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.filling.store(false, Ordering::Release);
            return;
        };
        let engine = host.engine.clone();
        let services = host.services.clone();
        let plugin = plugin.clone();
        runtime.spawn(async move {
            let mut store =
                sandbox::new_store(&engine, plugin.env.clone(), nobody(), None, services);
            sandbox::start_call(&mut store);
            let started = plugin.pre.instantiate(&mut store, None).await;
            store.data_mut().flush_output();
            match started {
                Ok(instance) => {
                    *plugin.spare.ready.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(Live { store, instance });
                }
                Err(e) => {
                    tracing::debug!(plugin = %plugin.manifest.id, "spare instance failed to start: {e:#}");
                }
            }
            plugin.spare.filling.store(false, Ordering::Release);
        });
    }
}

/// The caller a spare instance holds until a request takes it.
fn nobody() -> HookCaller {
    HookCaller {
        user_id: String::new(),
        username: String::new(),
        role: corral_hooks::Role::User,
    }
}

/// Why a call into a plugin failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// It ran past its time budget.
    Timeout(Duration),
    /// It tried to grow its memory past the cap.
    OutOfMemory(usize),
    /// It trapped (a panic, `unreachable`, a bad memory access); the text
    /// is the trap and, when there was one, the last line on stderr.
    Trap(String),
    /// It answered with something the host does not accept.
    InvalidOutput(String),
    /// No instance slot was free: the host is busy, not the plugin at
    /// fault, so this does not count toward turning it off.
    Busy,
    /// Stopped by the clock while the host kept it waiting (a model in its
    /// queue, the store, the network) before it used up its own time: not
    /// its fault either, so not counted.
    Stalled(Duration),
}

impl Failure {
    /// Whether it counts toward turning the plugin off.
    fn counts(&self) -> bool {
        !matches!(self, Failure::Busy | Failure::Stalled(_))
    }

    /// What happened, without the plugin's own output (its stderr, a trap's
    /// backtrace): the words users see; technicians see the whole failure
    /// in the plugin's status.
    pub(crate) fn summary(&self) -> &'static str {
        match self {
            Failure::Timeout(_) => "it ran out of time",
            Failure::OutOfMemory(_) => "it ran out of memory",
            Failure::Trap(_) => "it crashed",
            Failure::InvalidOutput(_) => "it returned invalid output",
            Failure::Busy => "the host had no room to start it",
            Failure::Stalled(_) => "the host kept it waiting too long",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout(budget) => {
                write!(f, "ran past its time limit of {} ms", budget.as_millis())
            }
            Failure::OutOfMemory(bytes) => {
                write!(f, "ran out of memory (limit {} MiB)", bytes >> 20)
            }
            Failure::Trap(what) => write!(f, "crashed: {what}"),
            Failure::InvalidOutput(what) => write!(f, "returned invalid output: {what}"),
            Failure::Busy => f.write_str(
                "could not start: every plugin instance slot is in use (raise the runtime's instance limit)",
            ),
            Failure::Stalled(after) => write!(
                f,
                "stopped after {} ms, most of them waiting for the host (a model, the store, the network)",
                after.as_millis()
            ),
        }
    }
}

fn classify(store: &Store<PluginState>, e: &wasmtime::Error) -> Failure {
    let state = store.data();
    if state.clock.timed_out {
        return Failure::Timeout(state.clock.budget);
    }
    if state.limiter.memory_refused {
        return Failure::OutOfMemory(state.env.memory_bytes);
    }
    let mut what = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => {
            let text = format!("{e:#}");
            text.lines().next().unwrap_or_default().to_string()
        }
    };
    if let Some(tail) = state.stderr_tail() {
        what = format!("{what} (stderr: {tail})");
    }
    Failure::Trap(what)
}

/// Calls `call` on the plugin, starting its instance in `live` first if
/// there is none. On failure the instance is dropped (a trapped instance
/// cannot be entered again), the failure is logged and counted, and the
/// plugin is turned off once it failed too often in a row.
pub(crate) async fn invoke(
    host: &Inner,
    plugin: &Arc<Installed>,
    live: &mut Option<Live>,
    caller: &HookCaller,
    ctx: Option<&HookContext>,
    call: Call<'_>,
) -> Result<Reply, Failure> {
    let export = call.export();
    let started = Instant::now();
    // Its own time is checked while its code runs; a call stuck in a wait
    // (a WASI clock, a host call) is stopped here.
    let by_clock =
        plugin.env.call_budget + Duration::from_millis(u64::from(host.config.max_wait_ms));
    let outcome =
        match tokio::time::timeout(by_clock, run(host, plugin, live, caller, ctx, call)).await {
            Ok(outcome) => outcome,
            // What it spent of its own time says whose the wait was.
            Err(_) => match live.as_ref().map(|l| l.store.data().clock.spent()) {
                Some(own) if own < plugin.env.call_budget => Err(Failure::Stalled(by_clock)),
                _ => Err(Failure::Timeout(by_clock)),
            },
        };
    let took = started.elapsed();
    plugin.health.stats.record(export, took, outcome.is_err());
    match &outcome {
        Ok(_) => plugin.health.succeeded(),
        Err(failure) if !failure.counts() => {
            // A call stopped halfway leaves an instance that cannot be
            // entered again.
            *live = None;
            tracing::warn!(
                target: "corral::plugin",
                plugin = %plugin.manifest.id,
                export = export.as_str(),
                "plugin call not counted against it: {failure}"
            );
        }
        Err(failure) => {
            *live = None;
            tracing::warn!(
                target: "corral::plugin",
                plugin = %plugin.manifest.id,
                export = export.as_str(),
                "plugin call failed: {failure}"
            );
            let message = format!("{export}: {failure}");
            if let Some(reason) = plugin.health.failed(message, host.config.failure_threshold) {
                tracing::error!(
                    target: "corral::plugin",
                    plugin = %plugin.manifest.id,
                    "plugin turned off: {reason}"
                );
                host.services
                    .plugin_disabled(&plugin.manifest.id, &reason)
                    .await;
            }
        }
    }
    outcome
}

async fn run(
    host: &Inner,
    plugin: &Arc<Installed>,
    live: &mut Option<Live>,
    caller: &HookCaller,
    ctx: Option<&HookContext>,
    call: Call<'_>,
) -> Result<Reply, Failure> {
    let export = call.export();
    if live.is_none() {
        if let Some(mut spare) = plugin.spare.take() {
            spare.bind(caller, ctx);
            *live = Some(spare);
        }
    }
    if live.is_none() {
        let mut store = sandbox::new_store(
            &host.engine,
            plugin.env.clone(),
            caller.clone(),
            ctx.map(|c| c.model.clone()),
            host.services.clone(),
        );
        sandbox::start_call(&mut store);
        let started = plugin.pre.instantiate(&mut store, ctx).await;
        store.data_mut().flush_output();
        match started {
            Ok(instance) => *live = Some(Live { store, instance }),
            Err(e) if e.is::<wasmtime::PoolConcurrencyLimitError>() => return Err(Failure::Busy),
            Err(e) => {
                tracing::debug!(plugin = %plugin.manifest.id, "instantiation failed: {e:?}");
                return Err(classify(&store, &e));
            }
        }
    }
    let Some(Live { store, instance }) = live.as_mut() else {
        unreachable!("the instance was just started");
    };
    sandbox::start_call(store);
    let result = instance.call(store, call).await;
    store.data_mut().flush_output();
    match result {
        Ok(mut reply) => {
            reply.check(export).map_err(Failure::InvalidOutput)?;
            Ok(reply)
        }
        Err(e) => {
            tracing::debug!(plugin = %plugin.manifest.id, %export, "call failed: {e:?}");
            Err(classify(store, &e))
        }
    }
}
