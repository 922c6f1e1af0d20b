//! The inference runtime's promises, over HTTP, with a fake backend linked
//! in (no model files needed, every number exact): loaded models are
//! evicted least recently used first under `memory_budget_mb` and
//! `max_loaded_models`, a model that is generating is never evicted, and
//! a chat history longer than the context keeps its system prompt and its
//! newest turns and drops the fewest.

#[path = "support.rs"]
mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use corral_host::config::Config;
use corral_host::inference::backends::BackendSet;
use corral_host::model::ModelRecord;
use corral_sdk::backend::{
    Backend, BackendInfo, BackendResult, CancelToken, Capabilities, ChatMessage, FinishReason,
    GenerateRequest, GenerateSummary, LoadRequest, Model, ModelInfo, TokenEvent,
};
use corral_sdk::Role;
use serde_json::{json, Value};
use support::{assert_error, Account, TestApp};
use tower::ServiceExt;

const MIB: u64 = 1024 * 1024;

/// What the fake models saw and how they behave, shared with the test.
#[derive(Default)]
struct Fake {
    /// Every prompt a generation was given, in order.
    prompts: Mutex<Vec<String>>,
    /// While set, generations wait (until cancelled).
    hold: AtomicBool,
    /// Generations that have started.
    started: AtomicUsize,
}

struct FakeBackend(Arc<Fake>);

struct FakeModel {
    fake: Arc<Fake>,
    context_length: u32,
    slots: u32,
}

fn all_capabilities() -> Capabilities {
    Capabilities {
        chat: true,
        completion: true,
        embeddings: false,
    }
}

/// The fake chat template: one line `role: content` per message. A token
/// is a word.
fn render(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut out: String = messages
        .iter()
        .map(|m| format!("{}: {}\n", m.role, m.content))
        .collect();
    if add_generation_prompt {
        out.push_str("assistant:");
    }
    out
}

fn tokens(text: &str) -> usize {
    text.split_whitespace().count()
}

impl Backend for FakeBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "fake".into(),
            version: "1".into(),
            description: "a backend the tests link in".into(),
            capabilities: all_capabilities(),
            formats: vec!["gguf".into()],
        }
    }

    fn load(
        &self,
        request: &LoadRequest,
        _progress: &mut dyn FnMut(f32) -> bool,
    ) -> BackendResult<Box<dyn Model>> {
        Ok(Box::new(FakeModel {
            fake: self.0.clone(),
            context_length: request.context_length,
            slots: request.slots,
        }))
    }
}

impl Model for FakeModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            architecture: "fake".into(),
            capabilities: all_capabilities(),
            context_length: self.context_length,
            trained_context_length: None,
            slots: self.slots,
            vocab_size: 1000,
            embedding_length: None,
            chat_template: None,
            chat_template_source: None,
            // Unknown: the host counts the file's size.
            memory_bytes: 0,
        }
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        self.fake
            .prompts
            .lock()
            .expect("prompts")
            .push(request.prompt.clone());
        let prompt_tokens = tokens(&request.prompt) as u32;
        sink(TokenEvent::Started { prompt_tokens });
        self.fake.started.fetch_add(1, Ordering::SeqCst);
        while self.fake.hold.load(Ordering::SeqCst) && !cancel.is_cancelled() {
            std::thread::sleep(Duration::from_millis(5));
        }
        sink(TokenEvent::Text {
            text: "fine".into(),
        });
        Ok(GenerateSummary {
            finish_reason: FinishReason::Stop,
            prompt_tokens,
            completion_tokens: 1,
            truncated_tokens: 0,
            time_to_first_token: 0.0,
            total_time: 0.0,
            cached_tokens: 0,
        })
    }

    fn tokenize(&self, text: &str, _add_bos: bool) -> BackendResult<Vec<u32>> {
        Ok(vec![1; tokens(text)])
    }

    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> BackendResult<String> {
        Ok(render(messages, add_generation_prompt))
    }
}

struct Ctx {
    t: TestApp,
    _data: tempfile::TempDir,
    fake: Arc<Fake>,
    tech: Account,
    user: Account,
}

impl Ctx {
    async fn new(config: Config) -> Self {
        let fake = Arc::new(Fake::default());
        let mut backends = BackendSet::default();
        backends.insert(
            Arc::new(FakeBackend(fake.clone())),
            PathBuf::from("(linked in)"),
        );
        let data = tempfile::tempdir().expect("data directory");
        let t = TestApp::with_config(Config {
            data_dir: data.path().to_path_buf(),
            ..config
        })
        .await
        .with_backends(backends);
        let tech = t.insert_user("tech", Role::Technician).await;
        let tech = t.issue(&tech).await;
        let user = t.insert_user("ursula", Role::User).await;
        let user = t.issue(&user).await;
        Ctx {
            t,
            _data: data,
            fake,
            tech,
            user,
        }
    }

    /// A ready model of the fake backend whose file is `mib` MiB.
    async fn model(&self, name: &str, mib: u64, context_length: u32) -> String {
        // Where downloads go: a model's file is loaded only from the model
        // folders. The fake backend does not read it.
        let file = self
            ._data
            .path()
            .join("models")
            .join(format!("{name}.gguf"));
        std::fs::create_dir_all(file.parent().expect("a folder")).expect("models folder");
        std::fs::write(&file, b"GGUF").expect("model file");
        let model = ModelRecord {
            source: format!("/nonexistent/{name}.gguf"),
            size_bytes: Some(mib * MIB),
            context_length,
            slots: 2,
            ..support::model_record(name, "fake", &file.to_string_lossy())
        };
        self.t.store.create_model(&model).await.expect("model");
        model.id
    }

    async fn load(&self, id: &str) -> (StatusCode, Value) {
        self.t
            .post(
                &format!("/api/models/{id}/load"),
                Some(&self.tech.access),
                &json!({}),
            )
            .await
    }

    async fn load_ok(&self, id: &str) {
        let (status, body) = self.load(id).await;
        assert_eq!(status, StatusCode::OK, "loading {id}: {body}");
    }

    /// Names of the loaded models, most recently used first, and the
    /// bytes they hold.
    async fn loaded(&self) -> (Vec<String>, u64) {
        let (status, body) = self.t.get("/api/status", Some(&self.tech.access)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let names = support::field_of_items(&json!({"items": body["loaded"]}), "name")
            .into_iter()
            .map(|n| n.as_str().expect("a name").to_owned())
            .collect();
        let used = body["limits"]["memory_used_bytes"]
            .as_u64()
            .expect("memory_used_bytes");
        (names, used)
    }

    /// Sends `content` in `chat` and reads the answer's events to the end.
    async fn send(&self, chat: &str, content: &str, max_tokens: u32) -> Vec<Value> {
        let r = self
            .t
            .call(
                Method::POST,
                &format!("/api/chats/{chat}/stream"),
                Some(&self.user.access),
                Some(&json!({"content": content, "sampling": {"max_tokens": max_tokens}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        sse_events(&r.text())
    }
}

fn sse_events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).expect("a JSON event"))
        .collect()
}

#[tokio::test]
async fn the_memory_budget_evicts_least_recently_used_first() {
    let c = Ctx::new(Config {
        memory_budget_mb: 100,
        ..Config::default()
    })
    .await;
    let a = c.model("a", 60, 64).await;
    let b = c.model("b", 30, 64).await;
    let d = c.model("d", 50, 64).await;

    c.load_ok(&a).await;
    c.load_ok(&b).await;
    assert_eq!(c.loaded().await, (vec!["b".into(), "a".into()], 90 * MIB));

    // 90 + 50 > 100: the least recently used (a) goes, and that is enough.
    c.load_ok(&d).await;
    assert_eq!(c.loaded().await, (vec!["d".into(), "b".into()], 80 * MIB));

    // 80 + 60 > 100, and still 50 + 60 after b: both others go.
    c.load_ok(&a).await;
    assert_eq!(c.loaded().await, (vec!["a".into()], 60 * MIB));

    // A model larger than the whole budget is refused.
    let huge = c.model("huge", 101, 64).await;
    let (status, body) = c.load(&huge).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    let (names, _) = c.loaded().await;
    assert!(!names.contains(&"huge".to_owned()), "{names:?}");
}

#[tokio::test]
async fn the_cap_on_loaded_models_evicts_the_least_recently_used() {
    let c = Ctx::new(Config {
        max_loaded_models: 2,
        ..Config::default()
    })
    .await;
    let a = c.model("a", 1, 64).await;
    let b = c.model("b", 1, 64).await;
    let d = c.model("d", 1, 64).await;
    c.load_ok(&a).await;
    c.load_ok(&b).await;
    // Using `a` makes `b` the least recently used.
    c.load_ok(&a).await;
    assert_eq!(c.loaded().await.0, ["a", "b"]);
    c.load_ok(&d).await;
    assert_eq!(c.loaded().await.0, ["d", "a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_loaded_at_the_same_time_keep_to_the_cap() {
    let c = Ctx::new(Config {
        max_loaded_models: 1,
        ..Config::default()
    })
    .await;
    for round in 0..10 {
        let a = c.model(&format!("a{round}"), 1, 64).await;
        let b = c.model(&format!("b{round}"), 1, 64).await;
        let (ra, rb) = tokio::join!(c.load(&a), c.load(&b));
        // Each loads in turn; the second may find the first still in use
        // (and say so), but never loads beside it.
        let mut loaded = 0;
        for (status, body) in [ra, rb] {
            if status == StatusCode::OK {
                loaded += 1;
            } else {
                assert_error(
                    status,
                    &body,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                );
            }
        }
        assert!(loaded >= 1, "round {round}: neither loaded");
        let (names, _) = c.loaded().await;
        assert_eq!(names.len(), 1, "round {round}: {names:?}");
    }
}

#[tokio::test]
async fn a_model_that_is_generating_is_not_evicted() {
    let c = Ctx::new(Config {
        max_loaded_models: 1,
        ..Config::default()
    })
    .await;
    let _busy = c.model("busy", 1, 64).await;
    let other = c.model("other", 1, 64).await;
    let (status, chat) =
        c.t.post(
            "/api/chats",
            Some(&c.user.access),
            &json!({"model": "busy"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let chat = chat["id"].as_str().expect("chat id").to_owned();

    c.fake.hold.store(true, Ordering::SeqCst);
    let answer = {
        let app = c.t.app.clone();
        let request = support::request(
            Method::POST,
            &format!("/api/chats/{chat}/stream"),
            Some(&c.user.access),
            Some(&json!({"content": "Hello", "sampling": {"max_tokens": 4}})),
        );
        tokio::spawn(async move {
            let response = app.oneshot(request).await.expect("a response");
            assert_eq!(response.status(), StatusCode::OK);
            http_body_util::BodyExt::collect(response.into_body())
                .await
                .expect("the whole stream")
                .to_bytes()
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while c.fake.started.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the generation did not start within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The only slot holds a model in use: no room, and it stays.
    let (status, body) = c.load(&other).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    assert_eq!(c.loaded().await.0, ["busy"]);

    // Once the answer is done, the idle model makes way.
    c.fake.hold.store(false, Ordering::SeqCst);
    let body = answer.await.expect("the answer task");
    let events = sse_events(&String::from_utf8_lossy(&body));
    let last = events.last().expect("events");
    assert_eq!(last["type"], "done", "{events:?}");
    assert_eq!(last["message"]["status"], "complete", "{last}");
    c.load_ok(&other).await;
    assert_eq!(c.loaded().await.0, ["other"]);
}

#[tokio::test]
async fn a_long_history_keeps_the_system_prompt_and_the_newest_turns_that_fit() {
    const CONTEXT: u32 = 60;
    const ANSWER: u32 = 8;
    let c = Ctx::new(Config::default()).await;
    c.model("talker", 1, CONTEXT).await;
    let system = "Be brief.";
    let (status, chat) =
        c.t.post(
            "/api/chats",
            Some(&c.user.access),
            &json!({"model": "talker", "system_prompt": system}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let chat = chat["id"].as_str().expect("chat id").to_owned();

    let system_message = ChatMessage {
        role: "system".into(),
        content: system.into(),
    };
    let fits = |turns: &[ChatMessage]| {
        let all: Vec<ChatMessage> = std::iter::once(system_message.clone())
            .chain(turns.iter().cloned())
            .collect();
        let prompt = render(&all, true);
        (tokens(&prompt) + ANSWER as usize <= CONTEXT as usize).then_some(prompt)
    };

    // Questions of uneven length, so that how many turns fit varies.
    let lengths = [9, 2, 7, 3, 11, 1, 5, 4, 6];
    let mut turns: Vec<ChatMessage> = Vec::new();
    let mut dropped_any = false;
    let mut last_kept = 0;
    for (i, len) in lengths.iter().enumerate() {
        let question = format!("q{i}{}", " w".repeat(*len));
        turns.push(ChatMessage {
            role: "user".into(),
            content: question.clone(),
        });
        let events = c.send(&chat, &question, ANSWER).await;
        let done = events.last().expect("events");
        assert_eq!(done["type"], "done", "turn {i}: {events:?}");
        assert_eq!(done["message"]["status"], "complete", "turn {i}: {done}");

        // A run of the newest turns that starts with a question and fits
        // next to the answer, after the system prompt. (Which run exactly
        // is the history fitting's choice: it drops old turns in blocks,
        // so that the prompt's start stays the same for several turns.)
        let seen = c
            .fake
            .prompts
            .lock()
            .expect("prompts")
            .last()
            .cloned()
            .expect("a prompt");
        let kept = (0..turns.len())
            .filter(|k| turns[*k].role == "user")
            .find(|k| fits(&turns[*k..]).as_deref() == Some(seen.as_str()))
            .unwrap_or_else(|| {
                panic!("turn {i}: the prompt is not a fitting run of the newest turns:\n{seen}")
            });
        dropped_any |= kept > 0;
        last_kept = kept;
        turns.push(ChatMessage {
            role: "assistant".into(),
            content: "fine".into(),
        });
    }
    assert!(dropped_any, "the history never outgrew the context");
    assert!(
        turns.len() - 1 - last_kept > 1,
        "more than the last question was kept"
    );

    // The stored chat keeps every message.
    let (_, stored) =
        c.t.get(&format!("/api/chats/{chat}"), Some(&c.user.access))
            .await;
    assert_eq!(
        stored["messages"].as_array().map(Vec::len),
        Some(2 * lengths.len()),
        "{stored}"
    );
}
