//! The plugin runtime against the real example and test plugins, built by
//! `scripts/build-plugins.sh` into `plugins/dist/<id>/{plugin.wasm,
//! plugin.toml}` (or the folder `CORRAL_PLUGINS_DIST` names). A test whose
//! plugins are missing fails and says so; with `CORRAL_ALLOW_SKIP=1` it
//! prints `SKIPPED <test>: <reason>` instead.
//!
//! The host's services are an in-memory stand-in here ([`Services`]); the
//! real ones are the host's and are tested there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use corral_hooks::{
    AnswerInfo, ChatMessage, GenerationHooks, HookCaller, HookContext, Hooks, HostServices,
    KvScope, PromptRequest, Role, SamplingChange, SamplingParams, ServiceResult, Surface,
};
use corral_plugin_host::{
    Capability, Export, PluginHost, PluginSettings, PluginStatus, RouteRequest, RuntimeConfig,
};
use serde_json::json;

// ---------------------------------------------------------------------
// The host's side, in memory.

/// Key-value data by (plugin, scope, key), with the quota enforced as
/// the store does; records the plugins the runtime turned off.
#[derive(Default)]
struct Services {
    kv: Mutex<BTreeMap<(String, String, String), Vec<u8>>>,
    disabled: Mutex<Vec<(String, String)>>,
    /// How long `embed` and `generate` take (a model waiting in the queue).
    model_delay: Mutex<Duration>,
    embed_calls: AtomicU32,
}

fn scope_name(scope: &KvScope) -> String {
    match scope {
        KvScope::User(id) => format!("user:{id}"),
        KvScope::Shared => "shared".into(),
    }
}

impl Services {
    fn key(plugin: &str, scope: &KvScope, key: &str) -> (String, String, String) {
        (plugin.into(), scope_name(scope), key.into())
    }

    fn disabled(&self) -> Vec<(String, String)> {
        self.disabled.lock().unwrap().clone()
    }
}

#[async_trait]
impl HostServices for Services {
    async fn kv_get(
        &self,
        plugin: &str,
        scope: &KvScope,
        key: &str,
    ) -> ServiceResult<Option<Vec<u8>>> {
        Ok(self
            .kv
            .lock()
            .unwrap()
            .get(&Self::key(plugin, scope, key))
            .cloned())
    }

    async fn kv_set(
        &self,
        plugin: &str,
        scope: &KvScope,
        key: &str,
        value: Vec<u8>,
        quota_bytes: u64,
    ) -> ServiceResult<()> {
        let mut kv = self.kv.lock().unwrap();
        let k = Self::key(plugin, scope, key);
        let used: usize = kv
            .iter()
            .filter(|(kk, _)| kk.0 == plugin && **kk != k)
            .map(|(kk, v)| kk.2.len() + v.len())
            .sum();
        if (used + key.len() + value.len()) as u64 > quota_bytes {
            return Err("the plugin's key-value quota is used up".into());
        }
        kv.insert(k, value);
        Ok(())
    }

    async fn kv_delete(&self, plugin: &str, scope: &KvScope, key: &str) -> ServiceResult<bool> {
        Ok(self
            .kv
            .lock()
            .unwrap()
            .remove(&Self::key(plugin, scope, key))
            .is_some())
    }

    async fn kv_list(
        &self,
        plugin: &str,
        scope: &KvScope,
        prefix: &str,
    ) -> ServiceResult<Vec<String>> {
        let scope = scope_name(scope);
        Ok(self
            .kv
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.0 == plugin && k.1 == scope && k.2.starts_with(prefix))
            .map(|k| k.2.clone())
            .collect())
    }

    async fn generate(
        &self,
        _caller: &HookCaller,
        model: &str,
        messages: Vec<ChatMessage>,
        _sampling: SamplingChange,
    ) -> ServiceResult<String> {
        let delay = *self.model_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        Ok(format!(
            "{model} says: {}",
            messages.last().map_or("", |m| &m.content)
        ))
    }

    async fn embed(
        &self,
        _caller: &HookCaller,
        _model: Option<&str>,
        texts: Vec<String>,
    ) -> ServiceResult<Vec<Vec<f32>>> {
        self.embed_calls.fetch_add(1, Ordering::Relaxed);
        let delay = *self.model_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        // A bag of letters: texts sharing words point the same way.
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.0f32; 26];
                for b in t
                    .to_ascii_lowercase()
                    .bytes()
                    .filter(u8::is_ascii_lowercase)
                {
                    v[(b - b'a') as usize] += 1.0;
                }
                v
            })
            .collect())
    }

    async fn plugin_disabled(&self, plugin: &str, reason: &str) {
        self.disabled
            .lock()
            .unwrap()
            .push((plugin.into(), reason.into()));
    }
}

// ---------------------------------------------------------------------
// Fixtures.

fn dist_dir() -> PathBuf {
    match std::env::var_os("CORRAL_PLUGINS_DIST") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist"),
    }
}

/// A built plugin: its manifest text and component.
#[derive(Clone)]
struct Built {
    manifest: String,
    wasm: Vec<u8>,
}

impl Built {
    /// The manifest with top-level keys replaced (or added).
    fn with(&self, changes: &[(&str, toml::Value)]) -> String {
        let mut table: toml::Table = toml::from_str(&self.manifest).expect("plugin.toml parses");
        for (key, value) in changes {
            table.insert((*key).to_string(), value.clone());
        }
        toml::to_string(&table).expect("plugin.toml writes")
    }
}

fn built(id: &str) -> Result<Built, String> {
    let dir = dist_dir().join(id);
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    Ok(Built {
        manifest: String::from_utf8(read("plugin.toml")?).map_err(|e| e.to_string())?,
        wasm: read("plugin.wasm")?,
    })
}

/// The built plugins `ids`, or `None` after reporting them missing (a
/// failure, or a skip with `CORRAL_ALLOW_SKIP=1`).
fn need<const N: usize>(test: &str, ids: [&str; N]) -> Option<[Built; N]> {
    let mut out = Vec::new();
    for id in ids {
        match built(id) {
            Ok(b) => out.push(b),
            Err(e) => {
                let reason =
                    format!("plugin `{id}` is not built ({e}); run scripts/build-plugins.sh first");
                if std::env::var("CORRAL_ALLOW_SKIP").as_deref() == Ok("1") {
                    // Past the harness's capture, so the skip is seen.
                    use std::io::Write;
                    let _ = writeln!(std::io::stderr(), "\nSKIPPED {test}: {reason}");
                    return None;
                }
                panic!("{test}: {reason}");
            }
        }
    }
    out.try_into().ok()
}

struct Rig {
    host: PluginHost,
    services: Arc<Services>,
    _cache: tempfile::TempDir,
}

fn rig_with(threshold: u32, cache: tempfile::TempDir) -> Rig {
    rig_sized(threshold, 64, cache)
}

fn rig_sized(threshold: u32, max_instances: u32, cache: tempfile::TempDir) -> Rig {
    let services = Arc::new(Services::default());
    let host = PluginHost::new(
        RuntimeConfig {
            cache_dir: cache.path().join("plugins"),
            max_memory_mb: 256,
            max_call_ms: 5000,
            max_wait_ms: 1000,
            failure_threshold: threshold,
            max_instances,
        },
        services.clone(),
    )
    .expect("the runtime starts");
    Rig {
        host,
        services,
        _cache: cache,
    }
}

fn rig() -> Rig {
    rig_with(5, tempfile::tempdir().unwrap())
}

fn settings(approved: &[Capability], config: serde_json::Value) -> PluginSettings {
    PluginSettings {
        enabled: true,
        approved: approved.to_vec(),
        config,
        ..Default::default()
    }
}

fn all_caps() -> Vec<Capability> {
    Capability::ALL.to_vec()
}

fn caller(user: &str) -> HookCaller {
    HookCaller {
        user_id: format!("id-{user}"),
        username: user.into(),
        role: Role::User,
    }
}

fn ctx(user: &str) -> HookContext {
    HookContext {
        caller: caller(user),
        model: "gemma".into(),
        surface: Surface::Chat,
        chat_id: Some("chat-1".into()),
        opted_in: vec![],
    }
}

fn prompt(text: &str) -> PromptRequest {
    PromptRequest {
        messages: vec![ChatMessage {
            role: "user".into(),
            content: text.into(),
        }],
        system_prompt: Some("You are Corral.".into()),
        sampling: SamplingParams::default(),
        context: vec![],
    }
}

fn answer(text: &str) -> AnswerInfo {
    AnswerInfo {
        text: text.into(),
        finish_reason: "stop".into(),
        prompt_tokens: 3,
        completion_tokens: 5,
    }
}

async fn begin(host: &PluginHost, ctx: &HookContext) -> Box<dyn GenerationHooks> {
    host.begin(ctx).await.expect("a plugin applies")
}

fn calls(status: &PluginStatus, export: Export) -> (u64, u64) {
    let s = status
        .stats
        .iter()
        .find(|s| s.export == export)
        .expect("stats for every export");
    (s.calls, s.errors)
}

fn route(method: &str, path: &str, body: &[u8]) -> RouteRequest {
    RouteRequest {
        method: method.into(),
        path: path.into(),
        query: String::new(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_vec(),
    }
}

// ---------------------------------------------------------------------
// Hooks.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_changes_the_prompt() {
    let Some([template]) = need("a_hook_changes_the_prompt", ["template"]) else {
        return;
    };
    let rig = rig();
    rig.host
        .install(
            &template.manifest,
            &template.wasm,
            settings(&all_caps(), json!({"line": "Answer in French."})),
        )
        .unwrap();
    let mut g = begin(&rig.host, &ctx("ann")).await;
    let mut p = prompt("hello");
    g.before_prompt(&mut p).await.unwrap();
    assert_eq!(
        p.system_prompt.as_deref(),
        Some("You are Corral.\n\nAnswer in French.")
    );
    assert_eq!(p.messages[0].content, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_priority_order_then_by_id() {
    let Some([template]) = need("hooks_run_in_priority_order_then_by_id", ["template"]) else {
        return;
    };
    let rig = rig();
    // One component under three ids: lower priority first, ties by id.
    for (id, priority, line) in [
        ("zeta", 1, "first"),
        ("beta", 5, "third"),
        ("alpha", 5, "second"),
    ] {
        let manifest = template.with(&[
            ("id", id.into()),
            ("priority", toml::Value::Integer(priority)),
        ]);
        rig.host
            .install(
                &manifest,
                &template.wasm,
                settings(&all_caps(), json!({"line": line})),
            )
            .unwrap();
    }
    let mut g = begin(&rig.host, &ctx("ann")).await;
    let mut p = prompt("hello");
    g.before_prompt(&mut p).await.unwrap();
    assert_eq!(
        p.system_prompt.as_deref(),
        Some("You are Corral.\n\nfirst\n\nsecond\n\nthird")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_rejection_wins_and_later_plugins_are_not_called() {
    let Some([trap, template]) = need(
        "the_first_rejection_wins_and_later_plugins_are_not_called",
        ["test-trap", "template"],
    ) else {
        return;
    };
    let rig = rig();
    // Two fail-closed plugins that stop the request, and one after them.
    for (id, priority) in [("stop-first", 1), ("stop-second", 2)] {
        let manifest = trap.with(&[
            ("id", id.into()),
            ("priority", toml::Value::Integer(priority)),
            ("failure", "fail-closed".into()),
        ]);
        rig.host
            .install(&manifest, &trap.wasm, settings(&all_caps(), json!({})))
            .unwrap();
    }
    let manifest = template.with(&[("priority", toml::Value::Integer(3))]);
    rig.host
        .install(&manifest, &template.wasm, settings(&all_caps(), json!({})))
        .unwrap();
    let mut g = begin(&rig.host, &ctx("ann")).await;
    let mut p = prompt("hello");
    let rejection = g.before_prompt(&mut p).await.unwrap_err();
    assert_eq!(rejection.plugin, "stop-first");
    assert!(
        rejection.reason == "the plugin failed: it crashed",
        "{rejection}"
    );
    assert_eq!(p.system_prompt.as_deref(), Some("You are Corral."));
    let second = rig.host.status("stop-second").unwrap();
    assert_eq!(calls(&second, Export::BeforePrompt), (0, 0));
    let later = rig.host.status("template").unwrap();
    assert_eq!(calls(&later, Export::BeforePrompt), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_filter_holds_back_matches_split_across_chunks() {
    let Some([pii]) = need(
        "a_stream_filter_holds_back_matches_split_across_chunks",
        ["pii-redact"],
    ) else {
        return;
    };
    let rig = rig();
    rig.host
        .install(&pii.manifest, &pii.wasm, settings(&all_caps(), json!({})))
        .unwrap();
    let mut g = begin(&rig.host, &ctx("ann")).await;
    assert!(g.filters_stream());
    let mut streamed = String::new();
    for piece in [
        "Write to ann.lee",
        "@exam",
        "ple.org or call",
        " me. Thanks",
    ] {
        let out = g.on_chunk(piece.to_string()).await.unwrap();
        assert!(
            !out.contains("ann.lee"),
            "leaked a partial address: {out:?}"
        );
        streamed.push_str(&out);
    }
    streamed.push_str(&g.finish().await.unwrap());
    assert_eq!(streamed, "Write to [email] or call me. Thanks");

    // The prompt is masked too, in every message.
    let mut g = begin(&rig.host, &ctx("ann")).await;
    let mut p = prompt("my mail is bob@example.com");
    g.before_prompt(&mut p).await.unwrap();
    assert_eq!(p.messages[0].content, "my mail is [email]");
}

/// rag-docs with its documents: ann uploads one into `notes`.
async fn rag_with_a_document(rag: &Built, manifest: &str) -> Rig {
    let rig = rig();
    rig.host
        .install(
            manifest,
            &rag.wasm,
            settings(&all_caps(), json!({"min-score": 0.0})),
        )
        .unwrap();
    let upload = route(
        "POST",
        "collections/notes/documents",
        json!({"name": "llamas.md", "text": "Llamas live in the Andes and eat grass."})
            .to_string()
            .as_bytes(),
    );
    let r = rig
        .host
        .handle_route("rag-docs", &caller("ann"), upload)
        .await
        .unwrap();
    assert!(
        (200..300).contains(&r.status),
        "{r:?} {}",
        String::from_utf8_lossy(&r.body)
    );
    rig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_generation_gets_a_fresh_instance() {
    let Some([rag]) = need("each_generation_gets_a_fresh_instance", ["rag-docs"]) else {
        return;
    };
    let rig = rag_with_a_document(&rag, &rag.manifest).await;
    // rag-docs keeps the sources it found in a global from before-prompt
    // to finish. A generation that found some and ended early...
    let mut g = begin(&rig.host, &ctx("ann")).await;
    let mut p = prompt("Where do llamas live?");
    g.before_prompt(&mut p).await.unwrap();
    assert!(
        p.context.iter().any(|c| c.contains("Andes")),
        "{:?}",
        p.context
    );
    drop(g);
    // ...leaves nothing behind for the next one.
    let mut g = begin(&rig.host, &ctx("ann")).await;
    let mut streamed = g.on_chunk("An answer.".into()).await.unwrap();
    streamed.push_str(&g.finish().await.unwrap());
    assert_eq!(streamed, "An answer.");
    // While within one generation the global lives from start to end.
    let mut g = begin(&rig.host, &ctx("ann")).await;
    let mut p = prompt("Where do llamas live?");
    g.before_prompt(&mut p).await.unwrap();
    let mut streamed = g.on_chunk("In the Andes.".into()).await.unwrap();
    streamed.push_str(&g.finish().await.unwrap());
    assert!(
        streamed.starts_with("In the Andes.\n\nSources: [1] llamas.md"),
        "{streamed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_waiting_for_the_host_is_not_the_plugins() {
    let Some([rag]) = need("time_waiting_for_the_host_is_not_the_plugins", ["rag-docs"]) else {
        return;
    };
    // A 100 ms budget, and an embedding model that takes 300 ms.
    let limits: toml::Table =
        toml::from_str("time-ms = 100\nmemory-mb = 64\nkv-kb = 1024").unwrap();
    let manifest = rag.with(&[("limits", toml::Value::Table(limits))]);
    let rig = rag_with_a_document(&rag, &manifest).await;
    *rig.services.model_delay.lock().unwrap() = Duration::from_millis(300);
    let calls_before = rig.services.embed_calls.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut g = begin(&rig.host, &ctx("ann")).await;
    let mut p = prompt("Where do llamas live?");
    g.before_prompt(&mut p).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        rig.services.embed_calls.load(Ordering::Relaxed),
        calls_before + 1
    );
    assert!(
        p.context.iter().any(|c| c.contains("Andes")),
        "{:?}",
        p.context
    );
    let status = rig.host.status("rag-docs").unwrap();
    assert_eq!(status.last_error, None);

    // A model that keeps it waiting past the rig's second of waiting: the
    // call is stopped, and that is not held against the plugin.
    *rig.services.model_delay.lock().unwrap() = Duration::from_secs(5);
    let mut g = begin(&rig.host, &ctx("ann")).await;
    let mut p = prompt("Where do llamas live?");
    let _ = g.before_prompt(&mut p).await;
    let status = rig.host.status("rag-docs").unwrap();
    assert_eq!(
        (status.consecutive_failures, status.last_error.clone()),
        (0, None),
        "a wait for the host counted against the plugin"
    );
    let (made, failed) = calls(&status, Export::BeforePrompt);
    assert_eq!(failed, 1, "{made} calls");
}

// ---------------------------------------------------------------------
// Hostile plugins.

async fn one_generation(host: &PluginHost) -> (Result<(), corral_hooks::Rejection>, PromptRequest) {
    let mut g = begin(host, &ctx("ann")).await;
    let mut p = prompt("hello");
    let r = g.before_prompt(&mut p).await;
    (r, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_plugin_is_stopped_at_its_deadline() {
    let Some([spin, template]) = need(
        "a_spinning_plugin_is_stopped_at_its_deadline",
        ["test-spin", "template"],
    ) else {
        return;
    };
    let rig = rig();
    let manifest = spin.with(&[("priority", toml::Value::Integer(1))]);
    let status = rig
        .host
        .install(&manifest, &spin.wasm, settings(&all_caps(), json!({})))
        .unwrap();
    let budget = Duration::from_millis(status.limits.time_ms.into());
    rig.host
        .install(
            &template.manifest,
            &template.wasm,
            settings(&all_caps(), json!({"line": "after"})),
        )
        .unwrap();

    // `skip`: the generation goes on without it, the next plugin runs.
    let started = Instant::now();
    let (r, p) = one_generation(&rig.host).await;
    let took = started.elapsed();
    r.unwrap();
    assert_eq!(p.system_prompt.as_deref(), Some("You are Corral.\n\nafter"));
    assert!(
        took >= budget,
        "stopped after {took:?}, before its {budget:?}"
    );
    // The runtime stops it within its budget plus one 5 ms tick; the
    // rest is room for a busy two-core test machine.
    assert!(took < budget + Duration::from_millis(400), "took {took:?}");
    let status = rig.host.status("test-spin").unwrap();
    assert_eq!(calls(&status, Export::BeforePrompt), (1, 1));
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("ran past its time limit"),
        "{:?}",
        status.last_error
    );

    // `fail-closed`: the generation stops, saying the plugin failed.
    let manifest = spin.with(&[
        ("failure", "fail-closed".into()),
        ("priority", toml::Value::Integer(1)),
    ]);
    rig.host
        .install(&manifest, &spin.wasm, settings(&all_caps(), json!({})))
        .unwrap();
    let (r, _) = one_generation(&rig.host).await;
    let rejection = r.unwrap_err();
    assert_eq!(rejection.plugin, "test-spin");
    // Users are told what happened, not the plugin's own output.
    assert_eq!(rejection.reason, "the plugin failed: it ran out of time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_is_stopped_at_its_cap() {
    let Some([bomb]) = need("a_memory_bomb_is_stopped_at_its_cap", ["test-memory-bomb"]) else {
        return;
    };
    let rig = rig();
    let status = rig
        .host
        .install(&bomb.manifest, &bomb.wasm, settings(&all_caps(), json!({})))
        .unwrap();
    let (r, p) = one_generation(&rig.host).await;
    r.unwrap();
    assert_eq!(p.system_prompt.as_deref(), Some("You are Corral."));
    let status_after = rig.host.status("test-memory-bomb").unwrap();
    let error = status_after.last_error.unwrap();
    assert!(
        error.contains(&format!(
            "ran out of memory (limit {} MiB)",
            status.limits.memory_mb
        )),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_plugin_is_stopped_and_the_next_call_works() {
    let Some([trap, template]) = need(
        "a_trapping_plugin_is_stopped_and_the_next_call_works",
        ["test-trap", "template"],
    ) else {
        return;
    };
    let rig = rig();
    let manifest = trap.with(&[("priority", toml::Value::Integer(1))]);
    rig.host
        .install(&manifest, &trap.wasm, settings(&all_caps(), json!({})))
        .unwrap();
    rig.host
        .install(
            &template.manifest,
            &template.wasm,
            settings(&all_caps(), json!({"line": "x"})),
        )
        .unwrap();
    for _ in 0..2 {
        let (r, p) = one_generation(&rig.host).await;
        r.unwrap();
        assert_eq!(p.system_prompt.as_deref(), Some("You are Corral.\n\nx"));
    }
    let status = rig.host.status("test-trap").unwrap();
    assert_eq!(calls(&status, Export::BeforePrompt), (2, 2));
    assert_eq!(status.consecutive_failures, 2);
    let error = status.last_error.unwrap();
    assert!(error.starts_with("before-prompt: crashed: "), "{error}");
    let template = rig.host.status("template").unwrap();
    assert_eq!(calls(&template, Export::BeforePrompt), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_read_host_files() {
    let Some([read_file]) = need("a_plugin_cannot_read_host_files", ["test-read-file"]) else {
        return;
    };
    let rig = rig();
    rig.host
        .install(
            &read_file.manifest,
            &read_file.wasm,
            settings(&all_caps(), json!({})),
        )
        .unwrap();
    let (r, p) = one_generation(&rig.host).await;
    r.unwrap();
    let seen = p.context.join("\n");
    assert!(seen.contains("read /etc/passwd: error:"), "{seen}");
    assert!(seen.contains("list /: error:"), "{seen}");
    assert!(seen.contains("env: 0 variables"), "{seen}");
    assert!(!seen.contains("root:"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_gets_no_sockets() {
    let Some([tcp]) = need("a_plugin_gets_no_sockets", ["test-net"]) else {
        return;
    };
    let rig = rig();
    let e = rig
        .host
        .install(&tcp.manifest, &tcp.wasm, settings(&all_caps(), json!({})))
        .unwrap_err();
    assert_eq!(e.code(), "refused_import", "{e}");
    assert!(e.to_string().contains("no socket access"), "{e}");
    assert!(e.to_string().contains("wasi:sockets/"), "{e}");
    assert!(rig.host.list().is_empty());
}

/// An HTTP server on 127.0.0.1 that answers every request with 204 and
/// counts the connections it accepted.
async fn counting_server() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reaches_only_approved_hosts_and_public_addresses() {
    let Some([net]) = need(
        "http_reaches_only_approved_hosts_and_public_addresses",
        ["test-net-http"],
    ) else {
        return;
    };
    let (port, seen) = counting_server().await;
    let rig = rig();
    let approved = |caps: &[Capability], private_network| PluginSettings {
        enabled: true,
        approved: caps.to_vec(),
        approved_hosts: vec!["127.0.0.1:*".into(), "localhost:*".into()],
        private_network,
        ..Default::default()
    };
    rig.host
        .install(&net.manifest, &net.wasm, approved(&[], false))
        .unwrap();
    let fetch = |authority: String| {
        let host = rig.host.clone();
        async move {
            let mut req = route("GET", "fetch", b"");
            req.query = format!("authority={authority}");
            let r = host
                .handle_route("test-net-http", &caller("ann"), req)
                .await
                .unwrap();
            assert_eq!(r.status, 200);
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            (
                v["ok"].as_bool().unwrap(),
                v["result"].as_str().unwrap().to_owned(),
            )
        }
    };
    let local = format!("127.0.0.1:{port}");

    // Without the capability, nothing goes out.
    let (ok, result) = fetch(local.clone()).await;
    assert!(!ok && result.contains("HttpRequestDenied"), "{result}");

    // With it: hosts not approved (declared or not) are denied; approved
    // ones that are, or resolve to, private addresses are prohibited.
    rig.host
        .configure("test-net-http", approved(&[Capability::Http], false))
        .unwrap();
    for (authority, want) in [
        ("example.com".to_owned(), "HttpRequestDenied"),
        ("10.0.0.1".to_owned(), "HttpRequestDenied"),
        (format!("127.0.0.2:{port}"), "HttpRequestDenied"),
        (local.clone(), "DestinationIpProhibited"),
        (format!("localhost:{port}"), "DestinationIpProhibited"),
    ] {
        let (ok, result) = fetch(authority.clone()).await;
        assert!(!ok && result.contains(want), "{authority}: {result}");
    }
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 0);
    let (r, p) = one_generation(&rig.host).await;
    r.unwrap();
    let passage = p.context.join("\n");
    assert!(
        passage.contains("GET http://example.com/: error:")
            && passage.contains("HttpRequestDenied"),
        "{passage}"
    );

    // A technician who allows the private network lets it through.
    rig.host
        .configure("test-net-http", approved(&[Capability::Http], true))
        .unwrap();
    let (ok, result) = fetch(local).await;
    assert!(ok && result == "status 204", "{result}");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    let status = rig.host.status("test-net-http").unwrap();
    assert_eq!(
        status.consecutive_failures, 0,
        "refusals are answers, not failures"
    );
    let hosts: Vec<String> = status
        .approved_hosts
        .iter()
        .map(|h| h.to_string())
        .collect();
    assert_eq!(hosts, ["127.0.0.1:*", "localhost:*"]);
}

/// test-huge-output's manifest with time enough to build its 64 MiB on a
/// busy machine: what is checked is the size of the answer, not the time.
fn roomy(huge: &Built) -> String {
    let limits: toml::Table = toml::from_str("memory-mb = 200\ntime-ms = 5000").unwrap();
    huge.with(&[("limits", toml::Value::Table(limits))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_output_is_invalid_and_the_text_passes_unchanged() {
    let Some([huge]) = need(
        "huge_output_is_invalid_and_the_text_passes_unchanged",
        ["test-huge-output"],
    ) else {
        return;
    };
    let rig = rig();
    rig.host
        .install(&roomy(&huge), &huge.wasm, settings(&all_caps(), json!({})))
        .unwrap();
    let mut g = begin(&rig.host, &ctx("ann")).await;
    let out = g.on_chunk("plain text".into()).await.unwrap();
    assert_eq!(out, "plain text");
    assert_eq!(g.on_chunk(" more".into()).await.unwrap(), " more");
    assert_eq!(g.finish().await.unwrap(), "");
    let status = rig.host.status("test-huge-output").unwrap();
    assert_eq!(calls(&status, Export::OnChunk), (1, 1));
    let error = status.last_error.unwrap();
    assert!(error.contains("returned invalid output"), "{error}");
    assert!(error.contains("more than 1048576"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_for_another_api_version_is_refused() {
    let Some([wrong]) = need(
        "a_plugin_for_another_api_version_is_refused",
        ["test-wrong-version"],
    ) else {
        return;
    };
    let rig = rig();
    let e = rig
        .host
        .install(
            &wrong.manifest,
            &wrong.wasm,
            settings(&all_caps(), json!({})),
        )
        .unwrap_err();
    assert_eq!(e.code(), "unsupported_api", "{e}");
    assert_eq!(e.http_status(), 422);
    let text = e.to_string();
    assert!(text.contains("0.9.0") && text.contains("0.1.0"), "{text}");
    // The manifest claiming the supported version does not help.
    let e = rig
        .host
        .install(
            &wrong.with(&[("api", "0.1.0".into())]),
            &wrong.wasm,
            settings(&all_caps(), json!({})),
        )
        .unwrap_err();
    assert_eq!(e.code(), "unsupported_api", "{e}");
    assert!(e.to_string().contains("corral:plugin@0.9.0"), "{e}");
    assert!(rig.host.list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_turn_a_plugin_off() {
    let Some([trap]) = need("repeated_failures_turn_a_plugin_off", ["test-trap"]) else {
        return;
    };
    let rig = rig_with(3, tempfile::tempdir().unwrap());
    rig.host
        .install(&trap.manifest, &trap.wasm, settings(&all_caps(), json!({})))
        .unwrap();
    for _ in 0..3 {
        let (r, _) = one_generation(&rig.host).await;
        r.unwrap();
    }
    let status = rig.host.status("test-trap").unwrap();
    assert!(!status.active);
    let reason = status.disabled_reason.unwrap();
    assert!(
        reason.starts_with("failed 3 times in a row; last: before-prompt: crashed"),
        "{reason}"
    );
    assert_eq!(
        rig.services.disabled(),
        vec![("test-trap".to_string(), reason.clone())]
    );
    assert!(
        rig.host.begin(&ctx("ann")).await.is_none(),
        "a turned-off plugin does not run"
    );

    // A technician turns it back on; it runs (and fails) again.
    rig.host
        .configure("test-trap", settings(&all_caps(), json!({})))
        .unwrap();
    assert!(rig.host.status("test-trap").unwrap().active);
    let (r, _) = one_generation(&rig.host).await;
    r.unwrap();
    assert_eq!(
        rig.host.status("test-trap").unwrap().consecutive_failures,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_closed_plugin_turned_off_still_refuses() {
    let Some([trap]) = need(
        "a_fail_closed_plugin_turned_off_still_refuses",
        ["test-trap"],
    ) else {
        return;
    };
    let rig = rig_with(2, tempfile::tempdir().unwrap());
    let closed = trap.with(&[("failure", "fail-closed".into())]);
    rig.host
        .install(&closed, &trap.wasm, settings(&all_caps(), json!({})))
        .unwrap();
    for _ in 0..2 {
        let (r, _) = one_generation(&rig.host).await;
        let refusal = r.unwrap_err();
        assert!(
            refusal.reason.starts_with("the plugin failed"),
            "{refusal:?}"
        );
    }
    let status = rig.host.status("test-trap").unwrap();
    assert!(
        !status.active && status.disabled_reason.is_some(),
        "{status:?}"
    );
    let calls = |host: &PluginHost| host.status("test-trap").unwrap().stats;

    // Turned off, it is not called, and what it guards does not get through.
    let before = calls(&rig.host);
    let (r, prompt) = one_generation(&rig.host).await;
    let refusal = r.unwrap_err();
    assert_eq!(refusal.plugin, "test-trap");
    assert!(
        refusal
            .reason
            .contains("turned off after repeated failures"),
        "{refusal:?}"
    );
    assert_eq!(prompt, self::prompt("hello"), "the prompt was touched");
    assert_eq!(calls(&rig.host), before, "a turned-off plugin was called");
    assert_eq!(
        rig.host.status("test-trap").unwrap().consecutive_failures,
        status.consecutive_failures,
        "a refusal by a turned-off plugin counted as a failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_closed_plugin_that_cannot_load_refuses_what_it_guards() {
    // Kept without a component (its file lost, say): nothing runs, but a
    // fail-closed plugin refuses the generations it would have run for.
    let rig = rig();
    let guard = "id = \"guard\"\nname = \"Guard\"\nversion = \"1.0.0\"\napi = \"0.1.0\"\n\
                 failure = \"fail-closed\"\nhooks = [\"before-prompt\"]\n";
    let on = settings(&[], json!({}));
    assert!(rig.host.keep_unloaded("guard", guard, on.clone()));
    let (r, prompt) = one_generation(&rig.host).await;
    let refusal = r.unwrap_err();
    assert_eq!(refusal.plugin, "guard");
    assert!(refusal.reason.contains("cannot be loaded"), "{refusal:?}");
    assert_eq!(prompt, self::prompt("hello"), "the prompt was touched");

    // Only where it would have run: its models, and its users when optional.
    let only_other = PluginSettings {
        models: Some(vec!["other".into()]),
        ..on.clone()
    };
    assert!(rig.host.keep_unloaded("guard", guard, only_other));
    assert!(rig.host.begin(&ctx("ann")).await.is_none());
    let optional = PluginSettings {
        optional: true,
        ..on.clone()
    };
    assert!(rig.host.keep_unloaded("guard", guard, optional));
    assert!(rig.host.uses_opt_ins());
    assert!(rig.host.begin(&ctx("ann")).await.is_none());
    let opted = HookContext {
        opted_in: vec!["guard".into()],
        ..ctx("ann")
    };
    assert!(rig.host.begin(&opted).await.is_some());

    // A technician's "off", a `skip` plugin and one without hooks guard
    // nothing.
    let off = PluginSettings {
        enabled: false,
        ..on.clone()
    };
    assert!(!rig.host.keep_unloaded("guard", guard, off));
    assert!(rig.host.begin(&ctx("ann")).await.is_none());
    let skip = guard.replace("fail-closed", "skip");
    assert!(!rig.host.keep_unloaded("guard", &skip, on.clone()));
    let hookless = guard.replace("hooks = [\"before-prompt\"]\n", "");
    assert!(!rig.host.keep_unloaded("guard", &hookless, on.clone()));
    assert!(rig.host.begin(&ctx("ann")).await.is_none());

    // Removed, it is gone.
    assert!(rig.host.keep_unloaded("guard", guard, on));
    assert!(rig.host.remove("guard"));
    assert!(rig.host.begin(&ctx("ann")).await.is_none());
    assert!(!rig.host.remove("guard"));
}

// ---------------------------------------------------------------------
// Install, cache, capabilities, routes.
// ---------------------------------------------------------------------
// Install, cache, capabilities, routes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compiled_component_is_cached() {
    let Some([template]) = need("the_compiled_component_is_cached", ["template"]) else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let cache_path = cache.path().to_path_buf();
    let first = rig_with(5, cache);
    let started = Instant::now();
    let inspected = first
        .host
        .inspect(&template.manifest, &template.wasm)
        .unwrap();
    let compile_time = started.elapsed();
    assert!(inspected.compiled);
    assert_eq!(first.host.compilations(), 1);
    first
        .host
        .install(
            &template.manifest,
            &template.wasm,
            settings(&all_caps(), json!({})),
        )
        .unwrap();
    assert_eq!(
        first.host.compilations(),
        1,
        "install reuses what inspect compiled"
    );

    // A restarted host with the same cache does not compile again.
    let second = {
        let services = Arc::new(Services::default());
        PluginHost::new(RuntimeConfig::new(cache_path.join("plugins")), services).unwrap()
    };
    let started = Instant::now();
    let inspected = second.inspect(&template.manifest, &template.wasm).unwrap();
    let load_time = started.elapsed();
    assert!(!inspected.compiled);
    assert_eq!(second.compilations(), 0);
    eprintln!("compile {compile_time:?}, load from the cache {load_time:?}");
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_must_be_asked_for_and_granted() {
    let Some([template]) = need("imports_must_be_asked_for_and_granted", ["template"]) else {
        return;
    };
    let rig = rig();
    // The component imports `config`; a manifest without it is refused.
    let e = rig
        .host
        .install(
            &template.with(&[("capabilities", toml::Value::Array(vec!["log".into()]))]),
            &template.wasm,
            settings(&all_caps(), json!({})),
        )
        .unwrap_err();
    assert_eq!(e.code(), "refused_import");
    assert!(e.to_string().contains("corral:plugin/config@0.1.0"), "{e}");
    assert!(e.to_string().contains("capability `config`"), "{e}");

    // Asked for but not approved: the call gets nothing, the plugin
    // falls back to its built-in line instead of the configured one.
    let status = rig
        .host
        .install(
            &template.manifest,
            &template.wasm,
            settings(&[Capability::Log], json!({"line": "configured"})),
        )
        .unwrap();
    assert_eq!(status.granted, vec![Capability::Log]);
    assert!(status.not_granted.contains(&Capability::Config));
    let (r, p) = one_generation(&rig.host).await;
    r.unwrap();
    let system = p.system_prompt.unwrap();
    assert!(!system.contains("configured"), "{system}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_checked_against_the_schema() {
    let Some([template]) = need("settings_are_checked_against_the_schema", ["template"]) else {
        return;
    };
    let rig = rig();
    let e = rig
        .host
        .install(
            &template.manifest,
            &template.wasm,
            settings(&all_caps(), json!({"line": 5, "colour": "red"})),
        )
        .unwrap_err();
    assert_eq!(e.code(), "invalid_config");
    let text = e.to_string();
    assert!(text.contains("line: must be a string"), "{text}");
    assert!(
        text.contains("colour: not a setting of this plugin"),
        "{text}"
    );
    let status = rig
        .host
        .install(
            &template.manifest,
            &template.wasm,
            settings(&all_caps(), json!({})),
        )
        .unwrap();
    assert!(
        status.config["line"].is_string(),
        "the default is filled in"
    );
    assert_eq!(
        rig.host
            .configure("nope", PluginSettings::default())
            .unwrap_err()
            .code(),
        "plugin_not_found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_apply_to_their_models_and_opted_in_users() {
    let Some([template]) = need(
        "plugins_apply_to_their_models_and_opted_in_users",
        ["template"],
    ) else {
        return;
    };
    let rig = rig();
    let mut s = settings(&all_caps(), json!({}));
    s.models = Some(vec!["other-model".into()]);
    rig.host
        .install(&template.manifest, &template.wasm, s.clone())
        .unwrap();
    assert!(rig.host.begin(&ctx("ann")).await.is_none());
    assert!(!rig.host.uses_opt_ins());

    s.models = None;
    s.optional = true;
    rig.host.configure("template", s.clone()).unwrap();
    assert!(rig.host.uses_opt_ins());
    assert!(rig.host.begin(&ctx("ann")).await.is_none());
    let mut opted = ctx("ann");
    opted.opted_in = vec!["template".into()];
    assert!(rig.host.begin(&opted).await.is_some());

    s.enabled = false;
    rig.host.configure("template", s).unwrap();
    assert!(rig.host.begin(&opted).await.is_none());
    assert!(rig.host.remove("template"));
    assert!(!rig.host.remove("template"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_data_is_kept_per_user() {
    let Some([kv]) = need("kv_data_is_kept_per_user", ["test-kv-user"]) else {
        return;
    };
    let rig = rig();
    rig.host
        .install(&kv.manifest, &kv.wasm, settings(&all_caps(), json!({})))
        .unwrap();
    let handle = |user: &'static str, req: RouteRequest| {
        let host = rig.host.clone();
        async move {
            host.handle_route("test-kv-user", &caller(user), req)
                .await
                .unwrap()
        }
    };
    let r = handle("ann", route("PUT", "items/note", b"ann's secret")).await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = handle("ann", route("GET", "items/note", b"")).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ann's secret"[..]));
    // Bob sees neither the value nor the key.
    let r = handle("bob", route("GET", "items/note", b"")).await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = handle("bob", route("GET", "items", b"")).await;
    let listed: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(listed["keys"], json!([]), "{listed}");
    let r = handle("ann", route("GET", "items", b"")).await;
    let listed: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(listed["keys"], json!(["note"]), "{listed}");
    // Shared data is shared.
    assert_eq!(
        handle("ann", route("PUT", "shared/motd", b"hi all"))
            .await
            .status,
        204
    );
    let r = handle("bob", route("GET", "shared/motd", b"")).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hi all"[..]));
    let keys = rig
        .services
        .kv
        .lock()
        .unwrap()
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    assert!(keys.iter().all(|k| k.0 == "test-kv-user"), "{keys:?}");
    assert!(
        keys.contains(&(
            "test-kv-user".into(),
            "user:id-ann".into(),
            "items/note".into()
        )),
        "{keys:?}"
    );
    // Keys and values are capped by the runtime.
    let long_key = format!("items/{}", "k".repeat(300));
    let r = handle("ann", route("PUT", &long_key, b"v")).await;
    assert_eq!(r.status, 409, "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.body).contains("a key is 1-256 bytes"),
        "{r:?}"
    );
    // The manifest's quota (64 KiB) holds.
    let r = handle("ann", route("PUT", "items/big", &vec![b'x'; 70 * 1024])).await;
    assert_eq!(r.status, 409, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_see_the_calling_users_kv_data() {
    let Some([mentor]) = need("hooks_see_the_calling_users_kv_data", ["code-mentor"]) else {
        return;
    };
    let rig = rig();
    rig.host
        .install(
            &mentor.manifest,
            &mentor.wasm,
            settings(&all_caps(), json!({"default-level": "beginner"})),
        )
        .unwrap();
    let put = route("PUT", "level", br#"{"level": "expert"}"#);
    let r = rig
        .host
        .handle_route("code-mentor", &caller("ann"), put)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let bad = route("PUT", "level", br#"{"level": "wizard"}"#);
    let r = rig
        .host
        .handle_route("code-mentor", &caller("ann"), bad)
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    let system = |user: &'static str| {
        let host = rig.host.clone();
        async move {
            let mut g = begin(&host, &ctx(user)).await;
            let mut p = prompt("How do I sort a list?");
            g.before_prompt(&mut p).await.unwrap();
            p.system_prompt.unwrap()
        }
    };
    let ann = system("ann").await;
    let bob = system("bob").await;
    assert!(ann.contains("expert"), "{ann}");
    assert!(bob.contains("beginner"), "{bob}");
    // A generation's first call usually finds an instance started ahead
    // of time, after the previous generation ended; it must serve whoever
    // takes it. The pauses let each spare finish starting.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(system("bob").await.contains("beginner"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(system("ann").await.contains("expert"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_without_approval_is_refused() {
    let Some([kv]) = need("kv_without_approval_is_refused", ["test-kv-user"]) else {
        return;
    };
    let rig = rig();
    rig.host
        .install(
            &kv.manifest,
            &kv.wasm,
            settings(&[Capability::Log], json!({})),
        )
        .unwrap();
    let put = route("PUT", "items/x", b"x");
    let r = rig
        .host
        .handle_route("test-kv-user", &caller("ann"), put)
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&r.body);
    assert!(r.status >= 400, "{r:?}");
    assert!(body.contains("capability `kv` is not granted"), "{body}");
    assert!(rig.services.kv.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_outside_the_manifest_get_404_without_a_call() {
    let Some([kv]) = need(
        "routes_outside_the_manifest_get_404_without_a_call",
        ["test-kv-user"],
    ) else {
        return;
    };
    let rig = rig();
    rig.host
        .install(&kv.manifest, &kv.wasm, settings(&all_caps(), json!({})))
        .unwrap();
    let e = rig
        .host
        .handle_route(
            "test-kv-user",
            &caller("ann"),
            route("DELETE", "../../etc/passwd", b""),
        )
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.http_status()), ("route_not_found", 404));
    let status = rig.host.status("test-kv-user").unwrap();
    assert_eq!(calls(&status, Export::Handle), (0, 0));
    let e = rig
        .host
        .handle_route("nope", &caller("ann"), route("GET", "items", b""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "plugin_not_found");
    let big = route("PUT", "items/big", &vec![b'x'; 5 << 20]);
    let e = rig
        .host
        .handle_route("test-kv-user", &caller("ann"), big)
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_route_answers_502_with_the_reason() {
    let Some([spin, huge, trap]) = need(
        "a_failing_route_answers_502_with_the_reason",
        ["test-spin", "test-huge-output", "test-trap"],
    ) else {
        return;
    };
    let rig = rig();
    for (manifest, p) in [
        (spin.manifest.clone(), &spin),
        (roomy(&huge), &huge),
        (trap.manifest.clone(), &trap),
    ] {
        rig.host
            .install(&manifest, &p.wasm, settings(&all_caps(), json!({})))
            .unwrap();
    }
    for (id, path, want) in [
        ("test-spin", "spin", "ran past its time limit of 100 ms"),
        (
            "test-huge-output",
            "huge",
            "a response body of 67108864 bytes",
        ),
        ("test-trap", "panic", "test-trap: panic in a route"),
        (
            "test-trap",
            "unreachable",
            "wasm `unreachable` instruction executed",
        ),
    ] {
        let e = rig
            .host
            .handle_route(id, &caller("ann"), route("GET", path, b""))
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.http_status()), ("plugin_failed", 502), "{e}");
        assert!(e.to_string().contains(want), "{id} {path}: {e}");
    }
    let status = rig.host.status("test-trap").unwrap();
    assert_eq!(calls(&status, Export::Handle), (2, 2));
    assert_eq!(status.consecutive_failures, 2);

    // A call waiting outside its code (an hour on the WASI clock) is
    // stopped by the clock: its 100 ms plus the rig's 1 s of waiting.
    let ann = caller("ann");
    let asleep = rig
        .host
        .handle_route("test-spin", &ann, route("GET", "sleep", b""));
    let e = tokio::time::timeout(Duration::from_secs(600), asleep)
        .await
        .expect("a call asleep on the WASI clock was never stopped")
        .unwrap_err();
    assert_eq!((e.code(), e.http_status()), ("plugin_failed", 502), "{e}");
    assert!(
        e.to_string().contains("ran past its time limit of 1100 ms"),
        "{e}"
    );

    // A plugin a technician turned off serves no routes.
    rig.host
        .configure("test-spin", PluginSettings::default())
        .unwrap();
    let e = rig
        .host
        .handle_route("test-spin", &caller("ann"), route("GET", "spin", b""))
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.http_status()), ("plugin_disabled", 409), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_pool_skips_the_plugin_without_blaming_it() {
    let Some([noop]) = need(
        "a_full_instance_pool_skips_the_plugin_without_blaming_it",
        ["test-noop"],
    ) else {
        return;
    };
    let rig = rig_sized(2, 2, tempfile::tempdir().unwrap());
    rig.host
        .install(&noop.manifest, &noop.wasm, settings(&all_caps(), json!({})))
        .unwrap();
    // Installing starts an instance ahead of the first generation; let it
    // finish, so that it is the first generation's.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = ctx("ann");
    // Two generations hold the two slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut g = begin(&rig.host, &c).await;
        g.before_prompt(&mut prompt("hello")).await.unwrap();
        held.push(g);
    }
    // More than the failure threshold of generations find no slot: each
    // goes on without the plugin (its policy is `skip`), none counts
    // against it.
    for _ in 0..3 {
        let mut g = begin(&rig.host, &c).await;
        g.before_prompt(&mut prompt("hello")).await.unwrap();
    }
    let status = rig.host.status("test-noop").unwrap();
    assert!(status.active, "a busy host does not turn the plugin off");
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(calls(&status, Export::BeforePrompt), (5, 3));
    // A slot comes free when a generation ends; an instance for the next
    // generation starts in it ahead of time (the pause lets it finish, so
    // that the next generation takes it rather than racing it).
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut g = begin(&rig.host, &c).await;
    g.before_prompt(&mut prompt("hello")).await.unwrap();
    let status = rig.host.status("test-noop").unwrap();
    assert_eq!(calls(&status, Export::BeforePrompt), (6, 3));
}

// ---------------------------------------------------------------------
// Cost.

/// Reads `junk` (empty: nothing), evicting the caches.
fn flush(junk: &[u8]) {
    let mut sum = 0u64;
    for i in (0..junk.len()).step_by(64) {
        sum = sum.wrapping_add(junk[i] as u64);
    }
    std::hint::black_box(sum);
}

/// `begin` + a no-op `before_prompt` + `after_answer` per generation with
/// `test-noop`, and `begin` when no plugin applies. Run with
/// `cargo test -p corral-plugin-host --release --test plugins -- --ignored --nocapture`
/// (and `CORRAL_BENCH_COLD=1` for cold caches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark; prints numbers"]
async fn bench_noop_generation() {
    let Some([noop]) = need("bench_noop_generation", ["test-noop"]) else {
        return;
    };
    let rig = rig();
    rig.host
        .install(&noop.manifest, &noop.wasm, settings(&all_caps(), json!({})))
        .unwrap();
    let info = answer("done");
    let c = ctx("ann");
    // With CORRAL_BENCH_COLD=1, 256 MiB are read between generations and
    // between chunks, as a model's weights are between two tokens: every
    // call then starts with cold caches, as in a server.
    let cold = std::env::var_os("CORRAL_BENCH_COLD").is_some();
    let junk = if cold {
        vec![1u8; 256 << 20]
    } else {
        Vec::new()
    };
    let (runs, warmup) = if cold { (600, 100) } else { (3000, 300) };
    let mut times = Vec::new();
    let mut firsts = Vec::new();
    let mut laters = Vec::new();
    for i in 0..runs {
        let started = Instant::now();
        let mut g = begin(&rig.host, &c).await;
        let mut p = prompt("hello");
        g.before_prompt(&mut p).await.unwrap();
        let first = started.elapsed();
        let later = Instant::now();
        g.after_answer(&info).await;
        let later = later.elapsed();
        drop(g);
        if i >= warmup {
            times.push(started.elapsed());
            firsts.push(first);
            laters.push(later);
        }
        // Generations are not back to back within microseconds; with a
        // gap, caches are colder, as in a server.
        tokio::time::sleep(Duration::from_micros(500)).await;
        flush(&junk);
    }
    let quantiles = |times: &mut Vec<Duration>| {
        times.sort();
        let q = |f: f64| times[((times.len() as f64) * f) as usize].as_secs_f64() * 1e6;
        format!("p50 {:.1} µs, p99 {:.1} µs", q(0.50), q(0.99))
    };
    println!(
        "noop generation (begin + before_prompt + after_answer): {} over {} runs",
        quantiles(&mut times),
        times.len()
    );
    println!(
        "  of which begin + the first call (starts the instance): {}",
        quantiles(&mut firsts)
    );
    println!(
        "  a call on the started instance (after_answer): {}",
        quantiles(&mut laters)
    );

    // A streamed answer: one on-chunk call per token.
    let mut chunks = Vec::new();
    for _ in 0..50 {
        let mut g = begin(&rig.host, &c).await;
        let mut p = prompt("hello");
        g.before_prompt(&mut p).await.unwrap();
        for _ in 0..64 {
            flush(&junk);
            let started = Instant::now();
            g.on_chunk(" token".into()).await.unwrap();
            chunks.push(started.elapsed());
        }
        g.finish().await.unwrap();
        g.after_answer(&info).await;
    }
    println!(
        "  on-chunk on the started instance: {}",
        quantiles(&mut chunks)
    );

    let mut other = c.clone();
    other.model = "no-plugin-for-this".into();
    rig.host
        .configure(
            "test-noop",
            PluginSettings {
                models: Some(vec!["gemma".into()]),
                ..settings(&all_caps(), json!({}))
            },
        )
        .unwrap();
    let started = Instant::now();
    let n = 100_000;
    for _ in 0..n {
        assert!(rig.host.begin(&other).await.is_none());
    }
    println!(
        "begin when no plugin applies: {:.0} ns",
        started.elapsed().as_secs_f64() * 1e9 / f64::from(n)
    );
}
