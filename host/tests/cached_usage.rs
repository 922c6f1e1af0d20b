//! Prompt tokens a backend takes from its cache reach every place that
//! shows usage: a chat answer's stored usage, the statistics, `/metrics`
//! and the OpenAI-compatible answers. A linked-in backend caches the way
//! a real one does: per cache key, the longest common prefix of the last
//! prompt and answer.

#[path = "support.rs"]
mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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
use support::{request, Account, TestApp};

/// The answer every generation writes, one token per word.
const ANSWER: &str = "one two three";

/// What the backend saw and reported.
#[derive(Default)]
struct Cache {
    /// The words of the last prompt and answer, per cache key.
    kept: HashMap<Option<String>, Vec<String>>,
    /// Each request's cache key and the cached tokens it reported.
    seen: Vec<(Option<String>, u32)>,
}

struct FakeBackend(Arc<Mutex<Cache>>);
struct FakeModel(Arc<Mutex<Cache>>);

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
            slots: 1,
            vocab_size: 1000,
            embedding_length: None,
            chat_template: None,
            chat_template_source: None,
            memory_bytes: 0,
        }
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        _cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        let words: Vec<String> = request
            .prompt
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let prompt_tokens = words.len() as u32;
        let mut cache = self.0.lock().unwrap();
        let kept = cache
            .kept
            .get(&request.cache_key)
            .cloned()
            .unwrap_or_default();
        let common = kept.iter().zip(&words).take_while(|(a, b)| a == b).count();
        // As a real engine, the last prompt token is always read again.
        let cached = (common as u32).min(prompt_tokens.saturating_sub(1));
        sink(TokenEvent::Started { prompt_tokens });
        for word in ANSWER.split(' ') {
            sink(TokenEvent::Text {
                text: format!("{word} "),
            });
        }
        let mut next = words;
        next.extend(ANSWER.split(' ').map(str::to_owned));
        cache.kept.insert(request.cache_key.clone(), next);
        cache.seen.push((request.cache_key.clone(), cached));
        Ok(GenerateSummary {
            finish_reason: FinishReason::Stop,
            prompt_tokens,
            completion_tokens: 3,
            truncated_tokens: 0,
            cached_tokens: cached,
            time_to_first_token: 0.01,
            total_time: 0.03,
        })
    }

    fn tokenize(&self, text: &str, _add_bos: bool) -> BackendResult<Vec<u32>> {
        Ok(vec![1; text.split_whitespace().count()])
    }

    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> BackendResult<String> {
        let mut text: String = messages
            .iter()
            .map(|m| format!("<{}> {} </turn> ", m.role, m.content))
            .collect();
        if add_generation_prompt {
            text.push_str("<assistant>");
        }
        Ok(text)
    }
}

struct Ctx {
    t: TestApp,
    _data: tempfile::TempDir,
    cache: Arc<Mutex<Cache>>,
    user: Account,
    admin: Account,
}

impl Ctx {
    async fn new() -> Self {
        let cache = Arc::new(Mutex::new(Cache::default()));
        let mut backends = BackendSet::default();
        backends.insert(
            Arc::new(FakeBackend(cache.clone())),
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
            ..support::model_record("fake", "fake", &file.to_string_lossy())
        };
        t.store.create_model(&model).await.expect("model");
        let user = t.insert_user("ursula", Role::User).await;
        let user = t.issue(&user).await;
        let admin = t.insert_user("ada", Role::Admin).await;
        let admin = t.issue(&admin).await;
        Ctx {
            t,
            _data: data,
            cache,
            user,
            admin,
        }
    }

    /// The cache keys and cached tokens of every request so far.
    fn seen(&self) -> Vec<(Option<String>, u32)> {
        self.cache.lock().unwrap().seen.clone()
    }

    /// Sends one message in a chat and returns the `done` event's message.
    async fn send(&self, chat_id: &str, content: &str) -> Value {
        let resp = self
            .t
            .send(request(
                Method::POST,
                &format!("/api/chats/{chat_id}/stream"),
                Some(&self.user.access),
                Some(&json!({ "content": content })),
            ))
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        let done = events(&resp.text())
            .into_iter()
            .find(|(name, _)| name == "done")
            .unwrap_or_else(|| panic!("no `done` event in:\n{}", resp.text()));
        done.1["message"].clone()
    }

    async fn post_v1(&self, path: &str, body: &Value) -> String {
        let resp = self
            .t
            .call(Method::POST, path, Some(&self.user.access), Some(body))
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        resp.text()
    }
}

/// The `(event, data)` pairs of a server-sent event stream; data that is
/// not JSON is kept as a JSON string.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = "message".to_string();
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = n.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    let d = d.trim();
                    data = Some(
                        serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_string())),
                    );
                }
            }
            data.map(|d| (name, d))
        })
        .collect()
}

#[tokio::test]
async fn a_chat_answer_keeps_the_cached_tokens_of_its_prompt() {
    let ctx = Ctx::new().await;
    let (status, chat) = ctx
        .t
        .post(
            "/api/chats",
            Some(&ctx.user.access),
            &json!({"model": "fake", "title": "cached"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let chat_id = chat["id"].as_str().expect("chat id");

    let first = ctx.send(chat_id, "What is a llama?").await;
    assert_eq!(first["usage"]["cached_tokens"], 0, "{first}");
    let second = ctx.send(chat_id, "And an alpaca?").await;
    let seen = ctx.seen();
    assert_eq!(seen.len(), 2);
    // The chat names itself to the backend, so that its turns find their
    // cache.
    for (key, _) in &seen {
        let key = key.as_deref().expect("a cache key");
        assert!(key.contains(chat_id), "the key {key:?} names the chat");
    }
    let cached = seen[1].1;
    assert!(cached > 0, "the second turn reads the first from the cache");
    assert_eq!(second["usage"]["cached_tokens"], cached, "{second}");
    let prompt = second["usage"]["prompt_tokens"].as_u64().expect("prompt");
    assert!(u64::from(cached) < prompt, "{second}");

    // The stored answer keeps it.
    let (status, read) = ctx
        .t
        .get(&format!("/api/chats/{chat_id}"), Some(&ctx.user.access))
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    let stored = read["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["id"] == second["id"])
        .cloned()
        .expect("the second answer");
    assert_eq!(stored["usage"]["cached_tokens"], cached, "{stored}");

    // Statistics and metrics sum it per model.
    let (status, stats) = ctx.t.get("/api/stats", Some(&ctx.admin.access)).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["models"][0]["model"], "fake");
    assert_eq!(
        stats["models"][0]["cached_prompt_tokens"], cached,
        "{stats}"
    );
    assert_eq!(
        stats["model_days"][0]["cached_prompt_tokens"], cached,
        "{stats}"
    );
    let (status, mine) = ctx.t.get("/api/me/stats", Some(&ctx.user.access)).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(mine["models"][0]["cached_prompt_tokens"], cached, "{mine}");
    let metrics = ctx
        .t
        .call(Method::GET, "/metrics", Some(&ctx.admin.access), None)
        .await;
    assert_eq!(metrics.status, StatusCode::OK);
    let line = format!("corral_prompt_tokens_cached_total{{model=\"fake\"}} {cached}");
    assert!(
        metrics.text().lines().any(|l| l == line),
        "no `{line}` in:\n{}",
        metrics.text()
    );
}

#[tokio::test]
async fn openai_answers_report_cached_prompt_tokens() {
    let ctx = Ctx::new().await;
    let mut messages = vec![json!({"role": "user", "content": "Name a colour."})];
    let text = ctx
        .post_v1(
            "/v1/chat/completions",
            &json!({"model": "fake", "messages": messages}),
        )
        .await;
    let first: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        first["usage"]["prompt_tokens_details"]["cached_tokens"], 0,
        "{first}"
    );

    // The same conversation with one more turn reads the old part from the
    // cache.
    messages.push(json!({"role": "assistant", "content": ANSWER}));
    messages.push(json!({"role": "user", "content": "Another one?"}));
    let text = ctx
        .post_v1(
            "/v1/chat/completions",
            &json!({"model": "fake", "messages": messages}),
        )
        .await;
    let second: Value = serde_json::from_str(&text).expect("JSON");
    let cached = ctx.seen()[1].1;
    assert!(cached > 0);
    assert_eq!(
        second["usage"]["prompt_tokens_details"]["cached_tokens"], cached,
        "{second}"
    );

    // Streamed, the final usage chunk carries it too.
    messages.push(json!({"role": "assistant", "content": ANSWER}));
    messages.push(json!({"role": "user", "content": "And a third?"}));
    let text = ctx
        .post_v1(
            "/v1/chat/completions",
            &json!({
                "model": "fake",
                "messages": messages,
                "stream": true,
                "stream_options": {"include_usage": true},
            }),
        )
        .await;
    let cached = ctx.seen()[2].1;
    assert!(cached > 0);
    let usage = events(&text)
        .into_iter()
        .find_map(|(_, data)| data.get("usage").cloned())
        .unwrap_or_else(|| panic!("no usage chunk in:\n{text}"));
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"], cached,
        "{usage}"
    );

    // Text completions that continue an earlier prompt.
    ctx.post_v1(
        "/v1/completions",
        &json!({"model": "fake", "prompt": "Once upon a time"}),
    )
    .await;
    let text = ctx
        .post_v1(
            "/v1/completions",
            &json!({"model": "fake", "prompt": "Once upon a time there was"}),
        )
        .await;
    let completion: Value = serde_json::from_str(&text).expect("JSON");
    let cached = ctx.seen()[4].1;
    assert_eq!(cached, 4, "the whole first prompt is reused");
    assert_eq!(
        completion["usage"]["prompt_tokens_details"]["cached_tokens"], cached,
        "{completion}"
    );

    // No conversation is named for /v1 requests: they match by prompt
    // alone, all under the same key.
    let keys: Vec<_> = ctx.seen().into_iter().map(|(key, _)| key).collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
}
