//! Streamed answers in chats over SSE, against the real llama.cpp backend
//! library and the demo model: events in order, answers stored with usage,
//! history carried into the next answer, regenerate, stop, a client that
//! goes away, one answer per chat, quotas, statistics and bad input.
//!
//! Needs `CORRAL_DEMO_MODEL` (the demo GGUF; `scripts/test.sh` sets it) and
//! the backend libraries that `cargo test --workspace` builds; without the
//! model each test fails, or with `CORRAL_ALLOW_SKIP=1` reports itself
//! skipped.

#[path = "support.rs"]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use corral_host::config::Config;
use corral_sdk::Role;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use support::{assert_error, request, Account, TestApp};
use tower::ServiceExt;

/// The demo model; see [`support::model_from_env`] for when it is missing.
fn demo_model() -> Option<PathBuf> {
    support::model_from_env("CORRAL_DEMO_MODEL", support::DEMO_MODEL_HOW)
}

struct Ctx {
    t: TestApp,
    admin: Account,
    user: Account,
}

impl Ctx {
    /// A host with the demo model registered as `demo` (llama backend).
    async fn new(model: PathBuf) -> Self {
        Self::with_context(model, 2048).await
    }

    async fn with_context(model: PathBuf, context_length: u32) -> Self {
        let t = TestApp::with_config(Config {
            backends_dir: Some(support::backends_dir(&["llama"])),
            ..Config::default()
        })
        .await;
        let tech = t.signed_in("tech", Role::Technician).await;
        let admin = t.signed_in("boss", Role::Admin).await;
        let user = t.signed_in("ursula", Role::User).await;
        let (status, body) = t
            .post(
                "/api/models",
                Some(&tech.access),
                &json!({
                    "name": "demo",
                    "backend": "llama",
                    "source": model,
                    "context_length": context_length,
                    "slots": 4,
                    "threads": 2,
                    "sampling": {"temperature": 0.0, "max_tokens": 24}
                }),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "adding the demo model: {body}"
        );
        assert_eq!(
            body["status"], "ready",
            "a local file is ready at once: {body}"
        );
        Ctx { t, admin, user }
    }

    async fn chat(&self, system: Option<&str>) -> String {
        let (status, body) = self
            .t
            .post(
                "/api/chats",
                Some(&self.user.access),
                &json!({"model": "demo", "system_prompt": system}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("chat id").to_owned()
    }

    /// Starts a streamed request; the response's body is the event stream.
    async fn open(&self, path: &str, body: &Value) -> axum::response::Response {
        self.t
            .app
            .clone()
            .oneshot(request(
                Method::POST,
                path,
                Some(&self.user.access),
                Some(body),
            ))
            .await
            .expect("the router is infallible")
    }

    /// Sends and reads the whole stream.
    async fn send(&self, chat: &str, body: Value) -> Vec<Value> {
        let response = self.open(&format!("/api/chats/{chat}/stream"), &body).await;
        read_all(response).await
    }

    async fn put_quotas(&self, quotas: Value) -> (StatusCode, Value) {
        let r = self
            .t
            .call(
                Method::PUT,
                "/api/quotas",
                Some(&self.admin.access),
                Some(&quotas),
            )
            .await;
        (r.status, r.json())
    }

    async fn stored(&self, chat: &str) -> Vec<Value> {
        let (status, body) = self
            .t
            .get(&format!("/api/chats/{chat}"), Some(&self.user.access))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["messages"].as_array().expect("messages").clone()
    }
}

/// Reads SSE events until the stream ends; each `data:` is a JSON object
/// whose `type` must equal the event's name.
async fn read_all(response: axum::response::Response) -> Vec<Value> {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream; charset=utf-8"
    );
    let mut events = EventReader::new(response.into_body());
    let mut all = Vec::new();
    while let Some(event) = events.next().await {
        all.push(event);
    }
    all
}

struct EventReader {
    body: Body,
    buffer: String,
}

impl EventReader {
    fn new(body: Body) -> Self {
        EventReader {
            body,
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let value: Value = serde_json::from_str(&data).expect("event data is JSON");
                assert_eq!(
                    Some(value["type"].as_str().unwrap_or_default().to_owned()),
                    name,
                    "event name and type agree"
                );
                return Some(value);
            }
            let frame = tokio::time::timeout(Duration::from_secs(120), self.body.frame())
                .await
                .expect("an event within 120 s")?
                .expect("reading the stream");
            if let Ok(data) = frame.into_data() {
                self.buffer
                    .push_str(std::str::from_utf8(&data).expect("UTF-8"));
            }
        }
    }
}

fn types(events: &[Value]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for e in events {
        let t = e["type"].as_str().unwrap_or("?");
        // Runs of deltas (and of queue positions) as one entry.
        if out.last() != Some(&t) || !matches!(t, "delta" | "queued") {
            out.push(t);
        }
    }
    out
}

fn text_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "delta")
        .filter_map(|e| e["text"].as_str())
        .collect()
}

#[tokio::test]
async fn answers_stream_are_stored_and_continue_the_history() {
    let Some(model) = demo_model() else { return };
    let c = Ctx::new(model).await;
    let chat = c.chat(Some("You answer briefly.")).await;

    let first = c
        .send(
            &chat,
            json!({"content": "Name three colours.", "sampling": {"seed": 7}}),
        )
        .await;
    assert_eq!(
        types(&first),
        [
            "user_message",
            "assistant_message",
            "started",
            "delta",
            "done"
        ],
        "{first:#?}"
    );
    assert!(first.iter().all(|e| e["chat_id"] == chat.as_str()));
    let done = &first.last().expect("done")["message"];
    assert_eq!(done["status"], "complete");
    assert_eq!(done["model"], "demo");
    assert_eq!(done["content"].as_str(), Some(text_of(&first).as_str()));
    assert!(!text_of(&first).is_empty(), "the answer has text");
    let usage = &done["usage"];
    let completion = usage["completion_tokens"]
        .as_u64()
        .expect("completion tokens");
    assert!((1..=24).contains(&completion), "{usage}");
    assert!(
        usage["prompt_tokens"].as_u64().expect("prompt tokens") > 5,
        "{usage}"
    );
    assert!(
        usage["tokens_per_second"].as_f64().expect("speed") > 0.0,
        "{usage}"
    );
    assert!(usage["time_to_first_token_ms"].is_u64(), "{usage}");
    let started_prompt = first[2]["prompt_tokens"].as_u64();
    assert_eq!(started_prompt, usage["prompt_tokens"].as_u64());

    // Stored as streamed, after the user's message.
    let stored = c.stored(&chat).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["role"], "user");
    assert_eq!(stored[0]["content"], "Name three colours.");
    assert_eq!(&stored[1], done);

    // The next answer reads the history: its prompt is longer than the
    // first one plus the new message alone could be.
    let second = c.send(&chat, json!({"content": "And three more?"})).await;
    let second_done = &second.last().expect("done")["message"];
    assert_eq!(second_done["status"], "complete", "{second:#?}");
    let second_prompt = second_done["usage"]["prompt_tokens"]
        .as_u64()
        .expect("tokens");
    let first_prompt = usage["prompt_tokens"].as_u64().expect("tokens");
    assert!(
        second_prompt > first_prompt + completion,
        "history carried: {second_prompt} vs {first_prompt} + {completion}"
    );

    // Regenerating replaces the last answer in place; greedy sampling
    // writes the same text again.
    // (The body may be left out.)
    let again = read_all(
        c.t.app
            .clone()
            .oneshot(request(
                Method::POST,
                &format!("/api/chats/{chat}/regenerate"),
                Some(&c.user.access),
                None,
            ))
            .await
            .expect("the router is infallible"),
    )
    .await;
    assert_eq!(
        types(&again),
        ["assistant_message", "started", "delta", "done"],
        "{again:#?}"
    );
    let regenerated = &again.last().expect("done")["message"];
    assert_eq!(regenerated["id"], second_done["id"]);
    assert_eq!(regenerated["content"], second_done["content"]);
    let stored = c.stored(&chat).await;
    assert_eq!(stored.len(), 4, "regenerate adds no message");
    assert_eq!(&stored[3], regenerated);

    // The OpenAI-compatible API counts too.
    let (status, body) = c
        .t
        .post(
            "/v1/chat/completions",
            Some(&c.user.access),
            &json!({"model": "demo", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Statistics count the four generations for the model.
    let (status, mine) = c.t.get("/api/me/stats", Some(&c.user.access)).await;
    assert_eq!(status, StatusCode::OK);
    let models = mine["models"].as_array().expect("models");
    assert_eq!(models.len(), 1, "{mine}");
    assert_eq!(models[0]["model"], "demo");
    assert_eq!(models[0]["generations"], 4);
    assert!(models[0]["completion_tokens"].as_u64().expect("tokens") >= completion);
    assert!(models[0]["avg_time_to_first_token_ms"].is_number());
    let (_, platform) = c.t.get("/api/stats", Some(&c.admin.access)).await;
    assert_eq!(platform["models"][0]["generations"], 4, "{platform}");
    assert_eq!(platform["model_days"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn stop_and_a_vanished_client_store_a_cancelled_answer() {
    let Some(model) = demo_model() else { return };
    let c = Ctx::new(model).await;
    let chat = c.chat(None).await;
    let long = json!({
        "content": "Write a long story about a dragon.",
        "sampling": {"max_tokens": 1500, "stop": []}
    });

    let response = c.open(&format!("/api/chats/{chat}/stream"), &long).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = EventReader::new(response.into_body());
    loop {
        let event = events.next().await.expect("events until the first delta");
        if event["type"] == "delta" {
            break;
        }
    }
    // One answer per chat at a time.
    let busy = c.open(&format!("/api/chats/{chat}/stream"), &long).await;
    assert_eq!(busy.status(), StatusCode::CONFLICT);

    let (status, body) =
        c.t.post(
            &format!("/api/chats/{chat}/stop"),
            Some(&c.user.access),
            &json!({}),
        )
        .await;
    assert_eq!((status, &body["stopped"]), (StatusCode::OK, &json!(true)));
    let mut last = Value::Null;
    while let Some(event) = events.next().await {
        last = event;
    }
    assert_eq!(last["type"], "done", "{last}");
    let stopped = &last["message"];
    assert_eq!(stopped["status"], "cancelled", "{stopped}");
    let tokens = stopped["usage"]["completion_tokens"]
        .as_u64()
        .expect("usage");
    assert!(tokens < 1500, "stopped early: {tokens} tokens");
    assert_eq!(&c.stored(&chat).await[1], stopped);
    let (_, body) =
        c.t.post(
            &format!("/api/chats/{chat}/stop"),
            Some(&c.user.access),
            &json!({}),
        )
        .await;
    assert_eq!(body["stopped"], false, "nothing runs any more");

    // A client that goes away stops its answer too.
    let response = c.open(&format!("/api/chats/{chat}/stream"), &long).await;
    let mut events = EventReader::new(response.into_body());
    let answer_id = loop {
        let event = events.next().await.expect("events");
        if event["type"] == "assistant_message" {
            break event["message"]["id"].clone();
        }
    };
    while events.next().await.is_some_and(|e| e["type"] != "delta") {}
    drop(events);
    let mut status = Value::Null;
    for _ in 0..600 {
        let stored = c.stored(&chat).await;
        let answer = stored
            .iter()
            .find(|m| m["id"] == answer_id)
            .expect("answer");
        status = answer["status"].clone();
        if status != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "cancelled");
}

#[tokio::test]
async fn quotas_bad_input_and_missing_things_get_clear_errors() {
    let Some(model) = demo_model() else { return };
    let c = Ctx::new(model).await;
    let chat = c.chat(None).await;
    let path = format!("/api/chats/{chat}/stream");
    let user = Some(c.user.access.as_str());

    for (body, want_status, want_code) in [
        (
            json!({"content": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"content": "  "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"content": "hi", "colour": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"content": "hi", "sampling": {"top_p": 3.0}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"content": "hi", "sampling": {"max_tokens": "many"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ] {
        let (status, json) = c.t.post(&path, user, &body).await;
        assert_error(status, &json, want_status, want_code);
    }
    let malformed =
        c.t.send(
            axum::http::Request::builder()
                .method(Method::POST)
                .uri(&path)
                .header(header::AUTHORIZATION, format!("Bearer {}", c.user.access))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"content\": "))
                .expect("request"),
        )
        .await;
    assert_error(
        malformed.status,
        &malformed.json(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );
    let (status, json) =
        c.t.post("/api/chats/nope/stream", user, &json!({"content": "hi"}))
            .await;
    assert_error(status, &json, StatusCode::NOT_FOUND, "not_found");
    let (status, json) =
        c.t.post(&format!("/api/chats/{chat}/regenerate"), user, &json!({}))
            .await;
    assert_error(status, &json, StatusCode::CONFLICT, "conflict");
    assert!(
        c.stored(&chat).await.is_empty(),
        "nothing stored by refusals"
    );

    // A daily quota of one token: the first answer passes (nothing used
    // yet), the second is refused with the allowance in the error.
    let user_id = c.user.id.clone();
    let (status, body) = c.put_quotas(json!({"users": {user_id.clone(): 1}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = c.send(&chat, json!({"content": "Hello!"})).await;
    assert_eq!(events.last().expect("done")["type"], "done");
    let (status, allowance) = c.t.get("/api/me/quota", user).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(allowance["limit"], 1);
    assert_eq!(allowance["remaining"], 0);
    assert!(allowance["used"].as_u64().expect("used") > 1);
    let refused =
        c.t.send(request(
            Method::POST,
            &path,
            user,
            Some(&json!({"content": "Again"})),
        ))
        .await;
    assert_error(
        refused.status,
        &refused.json(),
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exceeded",
    );
    assert!(refused.header(header::RETRY_AFTER).is_some());
    let (status, json) =
        c.t.post(
            "/v1/chat/completions",
            user,
            &json!({"model": "demo", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
    assert_eq!(
        json["error"]["code"], "quota_exceeded",
        "OpenAI's shape: {json}"
    );
    assert_eq!(
        c.stored(&chat).await.len(),
        2,
        "the refused message is not stored"
    );

    // Quotas name real users only; bad shapes are refused.
    let (status, json) = c.put_quotas(json!({"users": {"nobody": 5}})).await;
    assert_error(
        status,
        &json,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (status, json) = c.put_quotas(json!({"roles": {"user": -1}})).await;
    assert_error(
        status,
        &json,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (_, quotas) = c.t.get("/api/quotas", Some(&c.admin.access)).await;
    assert_eq!(quotas["users"][user_id.as_str()], 1, "unchanged: {quotas}");

    // A chat whose model was removed says so.
    let (status, tech_models) = c.t.get("/api/models", Some(&c.admin.access)).await;
    assert_eq!(status, StatusCode::OK);
    let model_id = tech_models["items"][0]["id"].as_str().expect("model id");
    {
        let tech = c.t.signed_in("tech2", Role::Technician).await;
        let (status, _) =
            c.t.delete(&format!("/api/models/{model_id}"), Some(&tech.access))
                .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, json) =
            c.t.post(&format!("/api/chats/{chat}/regenerate"), user, &json!({}))
                .await;
        assert_error(status, &json, StatusCode::NOT_FOUND, "not_found");
        let stored = c.stored(&chat).await;
        assert_eq!(
            stored[1]["model"], "demo",
            "old answers keep the model's name"
        );
    }
}

#[tokio::test]
async fn a_history_longer_than_the_context_keeps_its_newest_turns() {
    let Some(model) = demo_model() else { return };
    let c = Ctx::with_context(model, 256).await;
    let chat = c.chat(Some("Be brief.")).await;
    let filler = "Tell me about rivers, mountains, forests and the sea. ".repeat(6);
    let mut prompts = Vec::new();
    for i in 0..5 {
        let events = c
            .send(&chat, json!({"content": format!("{i}: {filler}")}))
            .await;
        let done = events.last().expect("an event");
        assert_eq!(done["type"], "done", "turn {i}: {done}");
        assert_eq!(done["message"]["status"], "complete", "turn {i}: {done}");
        prompts.push(
            done["message"]["usage"]["prompt_tokens"]
                .as_u64()
                .expect("tokens"),
        );
    }
    // Each prompt fits next to 24 answer tokens, so older turns were left
    // out once the history outgrew the window.
    assert!(prompts.iter().all(|p| *p + 24 <= 256), "{prompts:?}");
    assert!(prompts[4] < prompts[0] * 4, "{prompts:?}");
    assert_eq!(
        c.stored(&chat).await.len(),
        10,
        "the stored history stays whole"
    );
}

#[tokio::test]
async fn a_file_the_backend_cannot_load_fails_the_model_with_its_reason() {
    let Some(model) = demo_model() else { return };
    let c = Ctx::new(model.clone()).await;
    // The first half of the demo model: a GGUF header, then nothing.
    let dir = tempfile::tempdir().expect("dir");
    let broken = dir.path().join("half.gguf");
    let data = std::fs::read(&model).expect("demo model");
    std::fs::write(&broken, &data[..data.len() / 2]).expect("half a model");
    let tech = c.t.signed_in("tech3", Role::Technician).await;
    let (status, added) =
        c.t.post(
            "/api/models",
            Some(&tech.access),
            &json!({"name": "half", "backend": "llama", "source": broken}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{added}");
    let (_, chat) =
        c.t.post(
            "/api/chats",
            Some(&c.user.access),
            &json!({"model": "half"}),
        )
        .await;
    let chat = chat["id"].as_str().expect("chat id").to_owned();

    let events = c.send(&chat, json!({"content": "Hello"})).await;
    let last = events.last().expect("an event");
    assert_eq!(last["type"], "error", "{events:#?}");
    assert_eq!(last["error"]["code"], "unavailable", "{last}");
    let message = last["error"]["message"].as_str().expect("message");
    assert!(message.contains("half.gguf"), "names the file: {message}");
    let dir_text = dir.path().to_string_lossy();
    assert!(
        !message.contains(dir_text.as_ref()),
        "no server path: {message}"
    );
    assert_eq!(last["message"]["status"], "failed");

    // The model is marked failed with the reason, and leaves the lists.
    let id = added["id"].as_str().expect("id");
    let (_, record) =
        c.t.get(&format!("/api/models/{id}"), Some(&tech.access))
            .await;
    assert_eq!(record["status"], "failed", "{record}");
    assert!(
        record["error"]
            .as_str()
            .is_some_and(|e| e.contains("half.gguf")),
        "{record}"
    );
    let (_, listed) = c.t.get("/v1/models", Some(&c.user.access)).await;
    let names: Vec<&str> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(names, ["demo"], "{listed}");
    // The next try is refused before anything is stored or loaded: for a
    // user the model is gone, like one that is still downloading.
    let (status, json) =
        c.t.post(
            &format!("/api/chats/{chat}/stream"),
            Some(&c.user.access),
            &json!({"content": "Again"}),
        )
        .await;
    assert_error(status, &json, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(c.stored(&chat).await.len(), 2);
}
