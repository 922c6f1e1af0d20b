//! What a generation costs however it ends: an answer that fails after
//! writing, and an API request abandoned while its prompt is being read.

#[path = "support.rs"]
mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use corral_host::config::Config;
use corral_host::inference::backends::BackendSet;
use corral_host::model::ModelRecord;
use corral_sdk::backend::{
    Backend, BackendError, BackendInfo, BackendResult, CancelToken, Capabilities, ChatMessage,
    FinishReason, GenerateRequest, GenerateSummary, LoadRequest, Model, ModelInfo, TokenEvent,
};
use corral_sdk::Role;
use serde_json::json;
use support::{request, Account, TestApp};

const PROMPT_TOKENS: u32 = 7;
const WRITTEN: u32 = 3;

/// A backend whose generations write [`WRITTEN`] tokens and then fail, or,
/// while `gate` is shut, wait before they report having started.
#[derive(Default)]
struct Fake {
    fail: AtomicBool,
    gate: AtomicBool,
    entered: AtomicUsize,
}

struct FakeBackend(Arc<Fake>);
struct FakeModel(Arc<Fake>);

fn capabilities() -> Capabilities {
    Capabilities {
        chat: true,
        completion: true,
        embeddings: false,
    }
}

impl Backend for FakeBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "fake".into(),
            version: "1".into(),
            description: "a backend the tests link in".into(),
            capabilities: capabilities(),
            formats: vec!["gguf".into()],
        }
    }

    fn load(
        &self,
        _request: &LoadRequest,
        _progress: &mut dyn FnMut(f32) -> bool,
    ) -> BackendResult<Box<dyn Model>> {
        Ok(Box::new(FakeModel(self.0.clone())))
    }
}

impl Model for FakeModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            architecture: "fake".into(),
            capabilities: capabilities(),
            context_length: 4096,
            trained_context_length: None,
            slots: 2,
            vocab_size: 1000,
            embedding_length: None,
            chat_template: None,
            chat_template_source: None,
            memory_bytes: 0,
        }
    }

    fn generate(
        &self,
        _request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        self.0.entered.fetch_add(1, Ordering::SeqCst);
        // The prompt is being read: the model is busy, nothing reported yet.
        while self.0.gate.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        sink(TokenEvent::Started {
            prompt_tokens: PROMPT_TOKENS,
        });
        if cancel.is_cancelled() {
            return Ok(GenerateSummary {
                finish_reason: FinishReason::Cancelled,
                prompt_tokens: PROMPT_TOKENS,
                completion_tokens: 0,
                truncated_tokens: 0,
                time_to_first_token: 0.0,
                total_time: 0.0,
                cached_tokens: 0,
            });
        }
        for _ in 0..WRITTEN {
            sink(TokenEvent::Text {
                text: "word ".into(),
            });
        }
        if self.0.fail.load(Ordering::SeqCst) {
            return Err(BackendError::Internal("the device went away".into()));
        }
        Ok(GenerateSummary {
            finish_reason: FinishReason::Stop,
            prompt_tokens: PROMPT_TOKENS,
            completion_tokens: WRITTEN,
            truncated_tokens: 0,
            time_to_first_token: 0.0,
            total_time: 0.0,
            cached_tokens: 0,
        })
    }

    fn tokenize(&self, text: &str, _add_bos: bool) -> BackendResult<Vec<u32>> {
        Ok(vec![1; text.split_whitespace().count()])
    }

    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        _add_generation_prompt: bool,
    ) -> BackendResult<String> {
        Ok(messages.iter().map(|m| m.content.clone()).collect())
    }
}

struct Ctx {
    t: TestApp,
    _data: tempfile::TempDir,
    fake: Arc<Fake>,
    user: Account,
}

impl Ctx {
    async fn new() -> Self {
        let fake = Arc::new(Fake::default());
        let mut backends = BackendSet::default();
        backends.insert(
            Arc::new(FakeBackend(fake.clone())),
            PathBuf::from("(linked in)"),
        );
        let data = tempfile::tempdir().expect("data directory");
        let t = TestApp::with_config(Config {
            data_dir: data.path().to_path_buf(),
            ..Config::default()
        })
        .await
        .with_backends(backends);
        let file = data.path().join("models").join("fake.gguf");
        std::fs::create_dir_all(file.parent().expect("a folder")).expect("models folder");
        std::fs::write(&file, b"GGUF").expect("model file");
        let model = ModelRecord {
            source: "https://example.com/fake.gguf".into(),
            size_bytes: Some(4),
            slots: 2,
            ..support::model_record("fake", "fake", &file.to_string_lossy())
        };
        t.store.create_model(&model).await.expect("model");
        let user = t.insert_user("ursula", Role::User).await;
        let user = t.issue(&user).await;
        Ctx {
            t,
            _data: data,
            fake,
            user,
        }
    }

    /// (generations, prompt tokens, completion tokens) counted for the user
    /// today.
    async fn counted(&self) -> (u64, u64, u64) {
        let today = chrono::Utc::now().date_naive();
        let rows = self
            .t
            .store
            .generation_totals(today, today, Some(&self.user.id))
            .await
            .expect("totals");
        rows.iter().fold((0, 0, 0), |(g, p, c), r| {
            (
                g + r.generations,
                p + r.prompt_tokens,
                c + r.completion_tokens,
            )
        })
    }

    async fn wait_counted(&self) -> (u64, u64, u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let counted = self.counted().await;
            if counted.0 > 0 {
                return counted;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing was counted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_chat_answer_that_fails_counts_what_it_wrote() {
    let ctx = Ctx::new().await;
    ctx.fake.fail.store(true, Ordering::SeqCst);
    let (status, chat) = ctx
        .t
        .post(
            "/api/chats",
            Some(&ctx.user.access),
            &json!({"model": "fake", "title": "failing"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let id = chat["id"].as_str().expect("chat id");
    let body = json!({"content": "Say three words."});
    let resp = ctx
        .t
        .send(request(
            Method::POST,
            &format!("/api/chats/{id}/stream"),
            Some(&ctx.user.access),
            Some(&body),
        ))
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp.text().contains("event: error"), "{}", resp.text());
    let counted = ctx.wait_counted().await;
    assert_eq!(
        counted,
        (1, u64::from(PROMPT_TOKENS), u64::from(WRITTEN)),
        "the failed answer's tokens are counted"
    );
}

#[tokio::test]
async fn an_api_request_abandoned_before_it_reports_its_start_still_counts() {
    let ctx = Ctx::new().await;
    ctx.fake.gate.store(true, Ordering::SeqCst);
    let body = json!({"model": "fake", "messages": [{"role": "user", "content": "Hello there"}]});
    let call = tokio::spawn({
        let app = ctx.t.app.clone();
        let req = request(
            Method::POST,
            "/v1/chat/completions",
            Some(&ctx.user.access),
            Some(&body),
        );
        async move {
            use tower::ServiceExt;
            app.oneshot(req).await
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ctx.fake.entered.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the generation did not begin"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The client leaves while the model reads the prompt; then it reports.
    call.abort();
    let _ = call.await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    ctx.fake.gate.store(false, Ordering::SeqCst);
    let (generations, prompt, _) = ctx.wait_counted().await;
    assert_eq!((generations, prompt), (1, u64::from(PROMPT_TOKENS)));
}

#[tokio::test]
async fn a_fail_closed_plugin_that_no_longer_reads_refuses_until_turned_off() {
    // Stored by an earlier version: its manifest has a field this one no
    // longer knows, and its component file is gone. It still guards.
    use corral_hooks::{
        ChatMessage as HookMessage, HookCaller, HookContext, Hooks, PromptRequest, SamplingParams,
        Surface,
    };
    let t = TestApp::new().await;
    let tech = t.signed_in("tech", Role::Technician).await;
    let at = corral_host::time::now();
    let record = corral_host::model::PluginRecord {
        id: "old-guard".into(),
        manifest: "id = \"old-guard\"\nname = \"Old guard\"\nversion = \"1.0.0\"\n\
                   api = \"0.1.0\"\nfailure = \"fail-closed\"\nhooks = [\"before-prompt\"]\n\
                   retired = true\n"
            .into(),
        component_sha256: "0".repeat(64),
        enabled: true,
        optional: false,
        approved: Vec::new(),
        approved_hosts: Vec::new(),
        private_network: false,
        models: None,
        config: json!({}),
        disabled_reason: None,
        installed_by: tech.id.clone(),
        installed_at: at,
        updated_at: at,
    };
    t.store.put_plugin(&record).await.expect("stored");
    corral_host::plugins::load_all(&t.state)
        .await
        .expect("the host starts");
    let ctx = HookContext {
        caller: HookCaller {
            user_id: "u1".into(),
            username: "ursula".into(),
            role: Role::User,
        },
        model: "any".into(),
        surface: Surface::ChatCompletions,
        chat_id: None,
        opted_in: Vec::new(),
    };
    let mut prompt = PromptRequest {
        messages: vec![HookMessage {
            role: "user".into(),
            content: "my card is 4111111111111111".into(),
        }],
        system_prompt: None,
        sampling: SamplingParams::default(),
        context: Vec::new(),
    };
    let mut hooks = t.state.plugins.begin(&ctx).await.expect("it guards");
    let refusal = hooks.before_prompt(&mut prompt).await.unwrap_err();
    assert_eq!(refusal.plugin, "old-guard");

    let (status, view) = t.get("/api/plugins/old-guard", Some(&tech.access)).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert!(
        view["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot be read")),
        "{view}"
    );
    // Its manifest no longer reads, but the technician can turn it off.
    let (status, view) = t
        .patch(
            "/api/plugins/old-guard",
            Some(&tech.access),
            &json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["enabled"], false, "{view}");
    assert!(t.state.plugins.begin(&ctx).await.is_none());
}
