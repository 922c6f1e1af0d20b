//! The inference endpoints: `/v1/completions` and `/v1/embeddings`
//! (OpenAI's shapes, bad input included), `/api/status`, loading and
//! unloading models, `/metrics`, and the idle sweeper.
//!
//! The tests with real models load the backend libraries the workspace
//! builds and the models that `CORRAL_DEMO_MODEL` (the GGUF of
//! `scripts/fetch-demo-model.sh`) and `CORRAL_EMBED_MODEL_DIR` (the
//! directory of `scripts/fetch-embed-model.sh`) name; without them they
//! fail, or with `CORRAL_ALLOW_SKIP=1` report themselves skipped.

#[path = "support.rs"]
mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use base64::Engine;
use corral_host::config::Config;
use corral_host::model::{ModelKind, ModelRecord, ModelStatus};
use corral_sdk::Role;
use serde_json::{json, Value};
use support::{Account, TestApp};
use tempfile::TempDir;

/// An application with its data in a temporary directory.
struct Ctx {
    t: TestApp,
    _data: TempDir,
    tech: Account,
    admin: Account,
    user: Account,
}

impl Ctx {
    async fn new(config: Config) -> Self {
        let data = tempfile::tempdir().expect("data directory");
        let t = TestApp::with_config(Config {
            data_dir: data.path().to_path_buf(),
            ..config
        })
        .await;
        let mut accounts = Vec::new();
        for (name, role) in [
            ("tech", Role::Technician),
            ("admin", Role::Admin),
            ("user", Role::User),
        ] {
            let user = t.insert_user(name, role).await;
            accounts.push(t.issue(&user).await);
        }
        let user = accounts.pop().expect("user");
        let admin = accounts.pop().expect("admin");
        let tech = accounts.pop().expect("tech");
        Ctx {
            t,
            _data: data,
            tech,
            admin,
            user,
        }
    }

    /// A model straight in the store, usable by everyone.
    async fn fixture(&self, name: &str, kind: ModelKind, status: ModelStatus) -> ModelRecord {
        let ready = status == ModelStatus::Ready;
        let model = ModelRecord {
            kind,
            file_path: ready.then(|| "/nonexistent/fixture.gguf".to_owned()),
            size_bytes: ready.then_some(1),
            status,
            slots: 2,
            ..support::model_record(name, "llama", "/nonexistent/fixture.gguf")
        };
        self.t
            .store
            .create_model(&model)
            .await
            .expect("model fixture");
        model
    }

    /// Registers a local model through the API; returns its id.
    async fn register(&self, body: Value) -> String {
        let (status, json) = self
            .t
            .post("/api/models", Some(&self.tech.access), &body)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "registering: {json}");
        assert_eq!(json["status"], "ready", "a local model is ready: {json}");
        json["id"].as_str().expect("model id").to_owned()
    }

    async fn status(&self) -> Value {
        let (status, json) = self.t.get("/api/status", Some(&self.tech.access)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        json
    }

    async fn loaded_names(&self) -> Vec<Value> {
        support::field_of_items(&json!({"items": self.status().await["loaded"]}), "name")
    }

    async fn metrics(&self) -> String {
        let r = self
            .t
            .call(Method::GET, "/metrics", Some(&self.admin.access), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.text()
    }
}

/// A POST with a raw body.
fn raw_post(path: &str, token: &str, body: &'static str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("valid request")
}

/// Asserts an error in OpenAI's shape.
#[track_caller]
fn assert_openai_error(status: StatusCode, body: &Value, want: StatusCode, kind: &str) {
    assert_eq!(status, want, "unexpected status; body: {body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "no message: {body}"
    );
}

/// The `data:` payloads of a Server-Sent Events body.
fn sse_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_owned())
        .collect()
}

/// The value of the sample `line_start` (name and labels) on a metrics page.
fn sample(page: &str, line_start: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn completions_reject_bad_input_in_openai_shape() {
    let c = Ctx::new(Config::default()).await;
    c.fixture("embedder", ModelKind::Embedding, ModelStatus::Ready)
        .await;
    let token = &c.user.access;

    let r =
        c.t.send(raw_post("/v1/completions", token, "{\"model\": "))
            .await;
    assert_openai_error(
        r.status,
        &r.json(),
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
    );
    assert_eq!(r.json()["error"]["code"], "malformed_json");

    for (body, param) in [
        (json!({"model": "x", "prompt": 5}), "prompt"),
        (
            json!({"model": "x", "prompt": "Hi", "max_tokens": "many"}),
            "max_tokens",
        ),
        (
            json!({"model": "x", "prompt": "Hi", "temperature": [1]}),
            "temperature",
        ),
        (json!({"prompt": "Hi"}), "body"),
    ] {
        let (status, json) = c.t.post("/v1/completions", Some(token), &body).await;
        assert_openai_error(
            status,
            &json,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
        );
        assert_eq!(json["error"]["param"], param, "{body}: {json}");
    }
    for (body, param) in [
        (
            json!({"model": "embedder", "prompt": ["one", "two"]}),
            "prompt",
        ),
        (json!({"model": "embedder", "prompt": "Hi", "n": 2}), "n"),
        (
            json!({"model": "embedder", "prompt": "Hi", "top_p": 0}),
            "sampling",
        ),
        (
            json!({"model": "embedder", "prompt": "Hi", "max_tokens": 0}),
            "sampling",
        ),
    ] {
        let (status, json) = c.t.post("/v1/completions", Some(token), &body).await;
        assert_openai_error(
            status,
            &json,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
        );
        assert_eq!(json["error"]["param"], param, "{body}: {json}");
    }

    let (status, json) =
        c.t.post(
            "/v1/completions",
            Some(token),
            &json!({"model": "no-such-model", "prompt": "Hi"}),
        )
        .await;
    assert_openai_error(status, &json, StatusCode::NOT_FOUND, "not_found_error");

    // Text comes from text models only.
    let (status, json) =
        c.t.post(
            "/v1/completions",
            Some(token),
            &json!({"model": "embedder", "prompt": "Hi"}),
        )
        .await;
    assert_openai_error(
        status,
        &json,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
    );

    let (status, json) =
        c.t.post(
            "/v1/completions",
            None,
            &json!({"model": "embedder", "prompt": "Hi"}),
        )
        .await;
    assert_openai_error(
        status,
        &json,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
    );
}

#[tokio::test]
async fn embeddings_reject_bad_input_in_openai_shape() {
    let c = Ctx::new(Config::default()).await;
    c.fixture("texter", ModelKind::Chat, ModelStatus::Ready)
        .await;
    let token = &c.user.access;

    let r = c.t.send(raw_post("/v1/embeddings", token, "[1, 2")).await;
    assert_openai_error(
        r.status,
        &r.json(),
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
    );

    for (body, param) in [
        (json!({"model": "texter", "input": 5}), "input"),
        (json!({"model": "texter", "input": [1, 2, 3]}), "input"),
        (json!({"model": "texter", "input": {"text": "x"}}), "input"),
        (json!({"model": 7, "input": "x"}), "model"),
        (
            json!({"model": "texter", "input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
    ] {
        let (status, json) = c.t.post("/v1/embeddings", Some(token), &body).await;
        assert_openai_error(
            status,
            &json,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
        );
        assert_eq!(json["error"]["param"], param, "{body}: {json}");
    }

    for body in [
        json!({"model": "texter", "input": []}),
        json!({"model": "texter", "input": ["fine", ""]}),
        json!({"model": "texter", "input": vec!["x"; 2049]}),
        // A text model makes no embeddings.
        json!({"model": "texter", "input": "Hello"}),
    ] {
        let (status, json) = c.t.post("/v1/embeddings", Some(token), &body).await;
        assert_openai_error(
            status,
            &json,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        );
    }

    let (status, json) =
        c.t.post(
            "/v1/embeddings",
            Some(token),
            &json!({"model": "no-such-model", "input": "Hello"}),
        )
        .await;
    assert_openai_error(status, &json, StatusCode::NOT_FOUND, "not_found_error");
}

#[tokio::test]
async fn status_load_unload_and_metrics_need_their_roles() {
    let c = Ctx::new(Config {
        memory_budget_mb: 512,
        max_loaded_models: 3,
        idle_unload_secs: 120,
        ..Config::default()
    })
    .await;
    let ready = c
        .fixture("on-disk", ModelKind::Chat, ModelStatus::Ready)
        .await;
    let coming = c
        .fixture("coming", ModelKind::Chat, ModelStatus::Downloading)
        .await;

    let status = c.status().await;
    assert_eq!(status["limits"]["memory_budget_bytes"], 512 * 1024 * 1024);
    assert_eq!(status["limits"]["max_loaded_models"], 3);
    assert_eq!(status["limits"]["idle_unload_secs"], 120);
    assert_eq!(status["loaded"], json!([]));
    assert!(status["backends"].is_array(), "{status}");

    for token in [&c.user.access, &c.admin.access] {
        let (status, json) = c.t.get("/api/status", Some(token)).await;
        support::assert_error(status, &json, StatusCode::FORBIDDEN, "forbidden");
        for action in ["load", "unload"] {
            let (status, json) =
                c.t.post(
                    &format!("/api/models/{}/{action}", ready.id),
                    Some(token),
                    &json!({}),
                )
                .await;
            support::assert_error(status, &json, StatusCode::FORBIDDEN, "forbidden");
        }
    }
    let (status, json) = c.t.get("/metrics", Some(&c.user.access)).await;
    support::assert_error(status, &json, StatusCode::FORBIDDEN, "forbidden");
    let (status, json) = c.t.get("/metrics", None).await;
    support::assert_error(status, &json, StatusCode::UNAUTHORIZED, "unauthorized");

    let tech = Some(c.tech.access.as_str());
    for action in ["load", "unload"] {
        let (status, json) =
            c.t.post(&format!("/api/models/nope/{action}"), tech, &json!({}))
                .await;
        support::assert_error(status, &json, StatusCode::NOT_FOUND, "not_found");
        let (status, json) =
            c.t.post(
                &format!("/api/models/{}/{action}", coming.id),
                tech,
                &json!({}),
            )
            .await;
        support::assert_error(status, &json, StatusCode::CONFLICT, "conflict");
    }
    // Not loaded: unloading does nothing, and says so with 204.
    let (status, _) =
        c.t.post(
            &format!("/api/models/{}/unload", ready.id),
            tech,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // The file is missing: the load fails with a reason, and nothing stays.
    let (status, json) =
        c.t.post(&format!("/api/models/{}/load", ready.id), tech, &json!({}))
            .await;
    support::assert_error(
        status,
        &json,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    assert_eq!(c.status().await["loaded"], json!([]));

    let r =
        c.t.call(Method::GET, "/metrics", Some(&c.tech.access), None)
            .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header(header::CONTENT_TYPE)
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.headers
    );
    let page = c.metrics().await;
    // Requests are counted by route pattern, not by raw path.
    assert_eq!(
        sample(
            &page,
            r#"corral_http_requests_total{method="POST",route="/api/models/{id}/load",status="4xx"}"#
        ),
        Some(4.0),
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            r#"corral_http_requests_total{method="GET",route="/api/status",status="2xx"}"#
        ),
        Some(2.0),
        "{page}"
    );
    assert_eq!(sample(&page, "corral_models_loaded"), Some(0.0), "{page}");
    for family in [
        "corral_queue_waiting",
        "corral_generated_tokens_total",
        "corral_time_to_first_token_seconds",
        "corral_model_memory_bytes",
        "corral_download_bytes",
    ] {
        assert!(
            page.contains(&format!("# TYPE {family} ")),
            "no {family}: {page}"
        );
    }
}

/// The demo model, registered by its local path on the llama backend.
async fn demo_ctx(config: Config) -> Option<(Ctx, String)> {
    let path = support::model_from_env("CORRAL_DEMO_MODEL", support::DEMO_MODEL_HOW)?;
    let c = Ctx::new(Config {
        backends_dir: Some(support::backends_dir(&["llama"])),
        ..config
    })
    .await;
    let id = c
        .register(json!({"name": "demo", "backend": "llama", "source": path, "slots": 2}))
        .await;
    Some((c, id))
}

#[tokio::test]
async fn the_demo_model_completes_text_plain_and_streamed() {
    let Some((c, id)) = demo_ctx(Config::default()).await else {
        return;
    };
    let token = Some(c.user.access.as_str());
    let request = json!({
        "model": "demo",
        "prompt": "The capital of France is",
        "max_tokens": 6,
        "temperature": 0,
        "seed": 7,
    });
    let (status, plain) = c.t.post("/v1/completions", token, &request).await;
    assert_eq!(status, StatusCode::OK, "{plain}");
    assert_eq!(plain["object"], "text_completion");
    assert_eq!(plain["model"], "demo");
    assert!(plain["id"].as_str().is_some_and(|i| i.starts_with("cmpl-")));
    let choice = &plain["choices"][0];
    let text = choice["text"].as_str().expect("text");
    assert!(!text.is_empty(), "{plain}");
    assert!(
        ["length", "stop"].contains(&choice["finish_reason"].as_str().unwrap_or("")),
        "{plain}"
    );
    let usage = &plain["usage"];
    assert!(
        usage["prompt_tokens"].as_u64().is_some_and(|n| n > 1),
        "{plain}"
    );
    let completion_tokens = usage["completion_tokens"].as_u64().expect("tokens");
    assert!((1..=6).contains(&completion_tokens), "{plain}");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().unwrap_or(0) + completion_tokens)
    );

    // The same prompt as a one-string list, streamed, with the prompt
    // echoed and usage at the end: greedy decoding gives the same text.
    let mut streamed = request.clone();
    streamed["prompt"] = json!(["The capital of France is"]);
    streamed["stream"] = json!(true);
    streamed["echo"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let r =
        c.t.call(Method::POST, "/v1/completions", token, Some(&streamed))
            .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r
        .header(header::CONTENT_TYPE)
        .is_some_and(|t| t.starts_with("text/event-stream")));
    let data = sse_data(&r.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("a JSON chunk"))
        .collect();
    let mut joined = String::new();
    let mut finish = None;
    for chunk in &chunks {
        assert_eq!(chunk["object"], "text_completion", "{chunk}");
        if let Some(choice) = chunk["choices"].get(0) {
            joined.push_str(choice["text"].as_str().unwrap_or(""));
            if !choice["finish_reason"].is_null() {
                finish = Some(choice["finish_reason"].clone());
            }
        }
    }
    assert_eq!(joined, format!("The capital of France is{text}"));
    assert_eq!(finish.as_ref(), Some(&choice["finish_reason"]));
    let last = chunks.last().expect("a usage chunk");
    assert_eq!(last["choices"], json!([]), "{last}");
    // The same prompt again: it comes from the cache the first request
    // left, all but what must be read again; the counts are otherwise the
    // same.
    let prompt_tokens = plain["usage"]["prompt_tokens"].as_u64().expect("tokens");
    assert_eq!(plain["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let mut usage = last["usage"].clone();
    let cached = usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("cached tokens");
    assert!((1..prompt_tokens).contains(&cached), "{last}");
    usage["prompt_tokens_details"]["cached_tokens"] = json!(0);
    assert_eq!(usage, plain["usage"]);

    // Both generations count in the metrics.
    let page = c.metrics().await;
    let label = r#"{model="demo"}"#;
    assert_eq!(
        sample(&page, &format!("corral_generations_total{label}")),
        Some(2.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, &format!("corral_generated_tokens_total{label}")),
        Some(2.0 * completion_tokens as f64),
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            &format!("corral_time_to_first_token_seconds_count{label}")
        ),
        Some(2.0),
        "{page}"
    );
    assert!(
        sample(&page, &format!("corral_last_tokens_per_second{label}")).is_some_and(|v| v > 0.0),
        "{page}"
    );
    assert!(
        page.lines()
            .any(|l| l.starts_with("corral_model_loaded{model=\"demo\"") && l.ends_with(" 1")),
        "{page}"
    );
    assert!(
        page.lines()
            .any(|l| l.starts_with("corral_model_memory_bytes{model=\"demo\"")),
        "{page}"
    );

    let status = c.status().await;
    let loaded = &status["loaded"][0];
    assert_eq!(loaded["model_id"], id.as_str(), "{status}");
    assert_eq!(loaded["backend"], "llama");
    assert_eq!(loaded["slots"], 2);
    assert_eq!(loaded["in_flight"], 0);
    assert_eq!(
        status["queues"],
        json!([{"model_id": id, "name": "demo", "running": 0, "waiting": 0}])
    );
    assert!(
        loaded["memory_bytes"].as_u64().is_some_and(|n| n > 0),
        "{status}"
    );
    assert!(status["backends"]
        .as_array()
        .is_some_and(|b| b.iter().any(|b| b["name"] == "llama")));

    // Registered as an embedding model, a text model is found out once
    // loaded: it lacks the capability.
    let path = std::env::var("CORRAL_DEMO_MODEL").expect("set above");
    c.register(
        json!({"name": "not-an-embedder", "backend": "llama", "kind": "embedding", "source": path}),
    )
    .await;
    let (status, body) =
        c.t.post(
            "/v1/embeddings",
            token,
            &json!({"model": "not-an-embedder", "input": "Hello"}),
        )
        .await;
    assert_openai_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not make embeddings")),
        "{body}"
    );
}

#[tokio::test]
async fn models_load_and_unload_by_hand_and_when_changed_or_deleted() {
    let Some((c, id)) = demo_ctx(Config::default()).await else {
        return;
    };
    let tech = Some(c.tech.access.as_str());
    let (status, loaded) =
        c.t.post(&format!("/api/models/{id}/load"), tech, &json!({}))
            .await;
    assert_eq!(status, StatusCode::OK, "{loaded}");
    assert_eq!(loaded["name"], "demo");
    assert_eq!(loaded["architecture"], "gemma3");
    assert_eq!(loaded["capabilities"]["completion"], true);
    assert!(loaded["memory_bytes"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(c.loaded_names().await, vec![json!("demo")]);

    let (status, _) =
        c.t.post(&format!("/api/models/{id}/unload"), tech, &json!({}))
            .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(c.loaded_names().await.is_empty());

    // A change of a load parameter unloads it; a description does not.
    let (status, _) =
        c.t.post(&format!("/api/models/{id}/load"), tech, &json!({}))
            .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        c.t.patch(
            &format!("/api/models/{id}"),
            tech,
            &json!({"description": "Tiny"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(c.loaded_names().await, vec![json!("demo")]);
    let (status, _) =
        c.t.patch(&format!("/api/models/{id}"), tech, &json!({"slots": 1}))
            .await;
    assert_eq!(status, StatusCode::OK);
    assert!(c.loaded_names().await.is_empty());

    // Deleting it unloads it.
    let (status, _) =
        c.t.post(&format!("/api/models/{id}/load"), tech, &json!({}))
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(c.loaded_names().await, vec![json!("demo")]);
    let (status, _) = c.t.delete(&format!("/api/models/{id}"), tech).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(c.loaded_names().await.is_empty());
}

/// The embedding model, registered by its directory on the candle backend.
async fn embed_ctx(config: Config) -> Option<Ctx> {
    let dir = support::model_from_env("CORRAL_EMBED_MODEL_DIR", support::EMBED_MODEL_HOW)?;
    let c = Ctx::new(Config {
        backends_dir: Some(support::backends_dir(&["candle"])),
        ..config
    })
    .await;
    c.register(json!({
        "name": "minilm",
        "backend": "candle",
        "kind": "embedding",
        "source": dir,
    }))
    .await;
    Some(c)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a vector: {v}"))
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

#[tokio::test]
async fn the_embedding_model_embeds_as_floats_and_base64() {
    let Some(c) = embed_ctx(Config::default()).await else {
        return;
    };
    let token = Some(c.user.access.as_str());
    let inputs = [
        "A cat sits on the mat.",
        "A kitten is sitting on a rug.",
        "Quarterly revenue grew by four percent.",
    ];
    let (status, body) =
        c.t.post(
            "/v1/embeddings",
            token,
            &json!({"model": "minilm", "input": inputs}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "minilm");
    let data = body["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    let vectors: Vec<Vec<f32>> = data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["object"], "embedding");
            assert_eq!(d["index"], i);
            floats(&d["embedding"])
        })
        .collect();
    assert!(vectors.iter().all(|v| v.len() == 384));
    // Related sentences are closer than unrelated ones.
    assert!(
        cosine(&vectors[0], &vectors[1]) > cosine(&vectors[0], &vectors[2]),
        "similarities make no sense"
    );
    let tokens = body["usage"]["prompt_tokens"].as_u64().expect("tokens");
    assert!(tokens >= 3 * 5, "{body}");
    assert_eq!(body["usage"]["total_tokens"].as_u64(), Some(tokens));

    // One string, base64: the same vector as little-endian f32s.
    let (status, body) =
        c.t.post(
            "/v1/embeddings",
            token,
            &json!({"model": "minilm", "input": inputs[0], "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().expect("base64 text"))
        .expect("valid base64");
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded.len(), 384);
    assert!(cosine(&decoded, &vectors[0]) > 0.9999);

    // An embedding model does not complete text.
    let (status, body) =
        c.t.post(
            "/v1/completions",
            token,
            &json!({"model": "minilm", "prompt": "Hi"}),
        )
        .await;
    assert_openai_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
    );

    let page = c.metrics().await;
    assert_eq!(
        sample(&page, r#"corral_embedded_inputs_total{model="minilm"}"#),
        Some(4.0),
        "{page}"
    );
}

#[tokio::test]
async fn the_sweeper_unloads_idle_models() {
    let Some(c) = embed_ctx(Config {
        idle_unload_secs: 1,
        ..Config::default()
    })
    .await
    else {
        return;
    };
    let (status, body) =
        c.t.post(
            "/v1/embeddings",
            Some(&c.user.access),
            &json!({"model": "minilm", "input": "Hello"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(c.loaded_names().await, vec![json!("minilm")]);
    let sweeper = c.t.state.inference.manager.spawn_idle_sweeper();
    let mut unloaded = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if c.loaded_names().await.is_empty() {
            unloaded = true;
            break;
        }
    }
    sweeper.abort();
    assert!(
        unloaded,
        "the idle model is still loaded: {}",
        c.status().await
    );
}

#[tokio::test]
async fn chat_completions_refuse_what_would_change_the_answers_form() {
    // A client that asks for JSON, tools, banned tokens, log
    // probabilities or an image must not get plain text as if it had.
    let c = Ctx::new(Config::default()).await;
    c.fixture("embedder", ModelKind::Embedding, ModelStatus::Ready)
        .await;
    let token = &c.user.access;
    let hi = json!([{"role": "user", "content": "Hi"}]);
    let with = |field: &str, value: Value| {
        let mut body = json!({"model": "embedder", "messages": hi});
        body[field] = value;
        body
    };
    for (body, param) in [
        (
            with("response_format", json!({"type": "json_object"})),
            "response_format",
        ),
        (
            with(
                "response_format",
                json!({"type": "json_schema", "json_schema": {"name": "x"}}),
            ),
            "response_format",
        ),
        (
            with(
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            "tools",
        ),
        (with("functions", json!([{"name": "f"}])), "functions"),
        (with("logit_bias", json!({"50256": -100})), "logit_bias"),
        (with("logprobs", json!(true)), "logprobs"),
        (
            json!({"model": "embedder", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ]}]}),
            "messages",
        ),
    ] {
        let (status, json) = c.t.post("/v1/chat/completions", Some(token), &body).await;
        assert_openai_error(
            status,
            &json,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
        );
        assert_eq!(json["error"]["param"], param, "{body}: {json}");
    }
    // Their defaults pass: the request goes on to the model (which,
    // being an embedding model, writes no text).
    let mut plain = with("response_format", json!({"type": "text"}));
    plain["tools"] = json!([]);
    plain["logit_bias"] = json!({});
    plain["logprobs"] = json!(false);
    plain["messages"] = json!([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]);
    let (status, json) = c.t.post("/v1/chat/completions", Some(token), &plain).await;
    assert_openai_error(
        status,
        &json,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
    );
    assert_ne!(json["error"]["param"], "response_format", "{json}");
}
