//! The model registry and its downloader, against a real HTTP file server
//! on 127.0.0.1 that this test starts: progress, resume after a broken
//! connection, sha256 and format checks, failures with reasons, edits that
//! swap files, deletes, and who sees what.

#[path = "support.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use corral_host::config::Config;
use corral_host::events::Event;
use corral_sdk::Role;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::{assert_error, items, Account, TestApp};
use tempfile::TempDir;
use tower::ServiceExt;

/// Size of the served files.
const SIZE: usize = 3 * 1024 * 1024 + 123;
/// Where the flaky routes break off on their first request.
const BREAK_AT: usize = 1024 * 1024 + 7;

/// A file server with `Range` support and a few ways to misbehave.
#[derive(Clone, Default)]
struct Files {
    files: Arc<Mutex<HashMap<String, Bytes>>>,
    /// Requests per path.
    hits: Arc<Mutex<HashMap<String, usize>>>,
    /// `Range` headers received, per path.
    ranges: Arc<Mutex<HashMap<String, Vec<String>>>>,
    slow_chunks: Arc<AtomicUsize>,
    /// While set, `slow` answers stop after their first chunk, so that a
    /// test sees a download in flight for as long as it needs to.
    held: Arc<AtomicBool>,
}

struct FileServer {
    addr: SocketAddr,
    files: Files,
}

impl FileServer {
    async fn start() -> Self {
        let files = Files::default();
        let app = Router::new()
            .route("/{mode}/{name}", get(serve))
            .with_state(files.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the file server");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("file server");
        });
        FileServer { addr, files }
    }

    /// Adds a file; returns its sha256.
    fn add(&self, name: &str, data: Vec<u8>) -> String {
        let sha = hex(&Sha256::digest(&data));
        lock(&self.files.files).insert(name.to_owned(), Bytes::from(data));
        sha
    }

    /// `mode`: `plain`, `slow`, `flaky` (breaks off once, then honours
    /// `Range`) or `flaky-norange` (breaks off once, then ignores `Range`).
    fn url(&self, mode: &str, name: &str) -> String {
        format!("http://{}/{mode}/{name}", self.addr)
    }

    /// Waits (up to 30 s) until `path` was asked for.
    async fn wait_for_request(&self, path: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !lock(&self.files.hits).contains_key(path) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nobody asked for {path} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn ranges(&self, mode: &str, name: &str) -> Vec<String> {
        lock(&self.files.ranges)
            .get(&format!("/{mode}/{name}"))
            .cloned()
            .unwrap_or_default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("lock")
}

async fn serve(
    State(files): State<Files>,
    UrlPath((mode, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let key = format!("/{mode}/{name}");
    let hit = {
        let mut hits = lock(&files.hits);
        let n = hits.entry(key.clone()).or_insert(0);
        *n += 1;
        *n
    };
    // `flaky-swap`: the file changes after the first answer broke off.
    let version = if mode == "flaky-swap" && hit > 1 {
        format!("{name}.v2")
    } else {
        name.clone()
    };
    let Some(data) = lock(&files.files).get(&version).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"{}\"", hex(&Sha256::digest(&data)));
    // A range of another version is not served: the whole file is.
    let same_version = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v == etag);
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(r) = &range {
        lock(&files.ranges).entry(key).or_default().push(r.clone());
    }
    let range = range.filter(|_| same_version);
    let honour_range = mode != "flaky-norange";
    let start = match (&range, honour_range) {
        (Some(r), true) => r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0),
        _ => 0,
    };
    if start >= data.len() && start > 0 {
        return Response::builder()
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{}", data.len()))
            .body(Body::empty())
            .expect("response");
    }
    let body = data.slice(start..);
    let len = body.len();
    let breaks = mode.starts_with("flaky") && hit == 1;
    let slow = mode == "slow";
    let delay = files.slow_chunks.load(Ordering::Relaxed);
    let held = files.held.clone();
    // Chunks of 64 KiB; a flaky first answer stops (and so drops the
    // connection) after BREAK_AT bytes although it announced them all.
    let stream = futures::stream::unfold(0usize, move |sent| {
        let body = body.clone();
        let held = held.clone();
        async move {
            if sent >= body.len() {
                return None;
            }
            if breaks && start + sent >= BREAK_AT {
                return Some((Err(std::io::Error::other("dropped on purpose")), usize::MAX));
            }
            let mut end = (sent + 64 * 1024).min(body.len());
            if breaks {
                end = end.min(BREAK_AT - start);
            }
            if slow {
                tokio::time::sleep(Duration::from_millis(delay as u64)).await;
                while sent > 0 && held.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Some((Ok::<_, std::io::Error>(body.slice(sent..end)), end))
        }
    });
    let mut builder = Response::builder()
        .header(header::CONTENT_LENGTH, len)
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes");
    if start > 0 {
        builder = builder.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{}", data.len() - 1, data.len()),
        );
    }
    builder.body(Body::from_stream(stream)).expect("response")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `SIZE` pseudo-random bytes that start like a GGUF file.
fn gguf_bytes(seed: u8) -> Vec<u8> {
    let mut data = Vec::with_capacity(SIZE);
    data.extend_from_slice(b"GGUF");
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    while data.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push((x & 0xff) as u8);
    }
    data
}

/// The application with its data directory in a temporary folder.
struct Ctx {
    t: TestApp,
    data: TempDir,
    tech: Account,
    user: Account,
    server: FileServer,
}

impl Ctx {
    async fn new() -> Self {
        Self::with_origins(Vec::new()).await
    }

    /// Downloads may fetch from the file server and from `origins`.
    async fn with_origins(mut origins: Vec<String>) -> Self {
        let data = tempfile::tempdir().expect("data directory");
        let server = FileServer::start().await;
        origins.push(format!("http://{}", server.addr));
        let config = Config {
            data_dir: data.path().to_path_buf(),
            download_allowed_origins: origins,
            ..Config::default()
        };
        let t = TestApp::with_config(config).await;
        let tech_user = t.insert_user("tech", Role::Technician).await;
        let tech = t.issue(&tech_user).await;
        let plain_user = t.insert_user("someone", Role::User).await;
        let user = t.issue(&plain_user).await;
        Ctx {
            t,
            data,
            tech,
            user,
            server,
        }
    }

    async fn create(&self, body: Value) -> Value {
        let (status, json) = self
            .t
            .post("/api/models", Some(&self.tech.access), &body)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "creating a model: {json}");
        json
    }

    async fn model(&self, id: &str) -> Value {
        let (status, json) = self
            .t
            .get(&format!("/api/models/{id}"), Some(&self.tech.access))
            .await;
        assert_eq!(status, StatusCode::OK, "reading model {id}: {json}");
        json
    }

    /// Waits until the model's status is `want` (and no job runs).
    async fn wait_for(&self, id: &str, want: &str) -> Value {
        for _ in 0..600 {
            let model = self.model(id).await;
            if model["status"] == want && !self.t.state.downloads.is_active(id) {
                return model;
            }
            if model["status"] != "downloading" && model["status"] != want {
                panic!(
                    "model {id} ended {} instead of {want}: {model}",
                    model["status"]
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("model {id} did not become {want}: {}", self.model(id).await);
    }

    fn models_dir(&self, id: &str) -> PathBuf {
        self.data.path().join("models").join(id)
    }
}

fn str_of(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no `{field}` in {v}"))
        .to_owned()
}

/// Regular files under `dir` (none when it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn sha_of_file(path: &str) -> String {
    hex(&Sha256::digest(
        std::fs::read(path).expect("reading the model file"),
    ))
}

#[tokio::test]
async fn download_reports_progress_and_lands_whole() {
    let c = Ctx::new().await;
    let sha = c.server.add("model.gguf", gguf_bytes(1));
    c.server.files.slow_chunks.store(20, Ordering::Relaxed);
    c.server.files.held.store(true, Ordering::Relaxed);

    // The SSE stream, opened before the download starts.
    let sse =
        c.t.app
            .clone()
            .oneshot(support::request(
                Method::GET,
                "/api/events",
                Some(&c.tech.access),
                None,
            ))
            .await
            .expect("events");
    assert_eq!(sse.status(), StatusCode::OK);
    assert_eq!(
        sse.headers()[header::CONTENT_TYPE],
        "text/event-stream; charset=utf-8",
        "SSE content type"
    );
    assert_eq!(sse.headers()["x-accel-buffering"], "no");
    let mut sse_body = sse.into_body();
    let mut events = c.t.state.events.subscribe();

    let model = c
        .create(json!({
            "name": "tiny-gguf",
            "backend": "llama",
            "source": c.server.url("slow", "model.gguf"),
            "sha256": sha.to_uppercase(),
            "description": "A generated test file",
            "slots": 2,
            "sampling": {"temperature": 0.2},
            "access": {"everyone": true},
        }))
        .await;
    let id = str_of(&model, "id");
    assert_eq!(model["status"], "downloading");
    assert_eq!(model["sha256"], sha, "the hash is stored lowercase");
    assert_eq!(model["slots"], 2);
    assert_eq!(model["sampling"]["temperature"], 0.2);
    assert_eq!(model["sampling"]["top_k"], 40, "defaults fill the rest");

    // Progress while it runs: the file server holds the download after
    // its first chunk until the endpoint has shown it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, p) =
            c.t.get(&format!("/api/models/{id}/progress"), Some(&c.tech.access))
                .await;
        assert_eq!(status, StatusCode::OK, "{p}");
        if p["active"] == true && p["bytes"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(p["total"], SIZE as u64, "{p}");
            assert_eq!(p["status"], "downloading", "{p}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the progress endpoint never showed the running download: {p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.server.files.held.store(false, Ordering::Relaxed);
    let ready = c.wait_for(&id, "ready").await;
    assert_eq!(ready["size_bytes"], SIZE as u64);
    assert!(ready["error"].is_null());
    let path = str_of(&ready, "file_path");
    assert!(path.ends_with("model.gguf"), "{path}");
    assert!(Path::new(&path).starts_with(c.models_dir(&id)), "{path}");
    assert_eq!(sha_of_file(&path), sha);
    assert_eq!(
        files_under(&c.models_dir(&id)).len(),
        1,
        "no partial file left"
    );

    // The bus carried progress, ending with the whole file, then `ready`.
    let mut progress = Vec::new();
    let mut became_ready = false;
    while !became_ready {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the ready event within 10 s")
            .expect("the bus goes on");
        match event {
            Event::ModelDownload {
                model_id, bytes, ..
            } if model_id == id => progress.push(bytes),
            Event::ModelStatus {
                model_id, status, ..
            } if model_id == id => became_ready |= status == corral_host::model::ModelStatus::Ready,
            _ => {}
        }
    }
    assert!(became_ready, "no ready event");
    assert!(progress.len() >= 2, "progress events: {progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(progress.last().copied(), Some(SIZE as u64));
    assert!(
        progress.len() < 40,
        "progress is throttled: {} events",
        progress.len()
    );

    // The SSE stream said the same.
    let mut text = String::new();
    while !text.contains("\"status\":\"ready\"") {
        let frame = tokio::time::timeout(Duration::from_secs(5), sse_body.frame())
            .await
            .expect("an SSE frame in time")
            .expect("the stream goes on")
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(text.contains("event: model_download"), "{text}");
    assert!(text.contains("event: model_status"), "{text}");

    // Done: the progress endpoint reports the record.
    let (_, p) =
        c.t.get(&format!("/api/models/{id}/progress"), Some(&c.tech.access))
            .await;
    assert_eq!(p["active"], false);
    assert_eq!(p["status"], "ready");
    assert_eq!(p["bytes"], SIZE as u64);

    // A user sees it now, without technician details.
    let (status, list) = c.t.get("/api/models", Some(&c.user.access)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(items(&list).len(), 1);
    assert!(items(&list)[0].get("progress").is_none());
}

#[tokio::test]
async fn an_interrupted_download_resumes_with_range() {
    let c = Ctx::new().await;
    let sha = c.server.add("resume.gguf", gguf_bytes(2));
    let model = c
        .create(json!({
            "name": "resumed",
            "backend": "llama",
            "source": c.server.url("flaky", "resume.gguf"),
            "sha256": sha,
        }))
        .await;
    let id = str_of(&model, "id");
    let ready = c.wait_for(&id, "ready").await;
    assert_eq!(sha_of_file(&str_of(&ready, "file_path")), sha);
    // The second request resumed from what had arrived (bytes in flight
    // when the connection dropped are lost, so at most BREAK_AT).
    let ranges = c.server.ranges("flaky", "resume.gguf");
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    let offset: usize = ranges[0]
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an open range: {ranges:?}"));
    assert!(offset > 0 && offset <= BREAK_AT, "{ranges:?}");
}

#[tokio::test]
async fn a_file_that_changed_between_attempts_is_not_spliced() {
    // The first answer breaks off; by the second, the file on the server
    // is a new version of the same length. Resuming would join the old
    // head to the new tail; `If-Range` makes the server send the new
    // version whole.
    let c = Ctx::new().await;
    c.server.add("swap.gguf", gguf_bytes(21));
    let new_sha = c.server.add("swap.gguf.v2", gguf_bytes(22));
    let model = c
        .create(json!({
            "name": "swapped",
            "backend": "llama",
            "source": c.server.url("flaky-swap", "swap.gguf"),
        }))
        .await;
    let id = str_of(&model, "id");
    let ready = c.wait_for(&id, "ready").await;
    assert_eq!(sha_of_file(&str_of(&ready, "file_path")), new_sha);
    assert_eq!(c.server.ranges("flaky-swap", "swap.gguf").len(), 1);
    let left: Vec<PathBuf> = files_under(&c.models_dir(&id));
    assert_eq!(left.len(), 1, "only the model file stays: {left:?}");
}

#[tokio::test]
async fn a_server_that_ignores_range_gets_a_fresh_start() {
    let c = Ctx::new().await;
    let sha = c.server.add("norange.gguf", gguf_bytes(3));
    let model = c
        .create(json!({
            "name": "norange",
            "backend": "llama",
            "source": c.server.url("flaky-norange", "norange.gguf"),
        }))
        .await;
    let id = str_of(&model, "id");
    let ready = c.wait_for(&id, "ready").await;
    assert_eq!(sha_of_file(&str_of(&ready, "file_path")), sha);
    assert_eq!(ready["size_bytes"], SIZE as u64);
    assert_eq!(c.server.ranges("flaky-norange", "norange.gguf").len(), 1);
}

#[tokio::test]
async fn a_restarted_host_resumes_a_partial_download() {
    let c = Ctx::new().await;
    let data = gguf_bytes(4);
    let sha = c.server.add("restart.gguf", data.clone());
    // A record left `downloading` with half a file, as after a crash.
    let record = corral_host::model::ModelRecord {
        sha256: Some(sha.clone()),
        file_path: None,
        size_bytes: None,
        status: corral_host::model::ModelStatus::Downloading,
        slots: 4,
        ..support::model_record("restarted", "llama", &c.server.url("plain", "restart.gguf"))
    };
    c.t.store.create_model(&record).await.expect("record");
    let target = c.t.state.downloads.target_path(&record);
    std::fs::create_dir_all(target.parent().expect("dir")).expect("dir");
    let mut part = target.clone().into_os_string();
    part.push(".part");
    std::fs::write(&part, &data[..SIZE / 2]).expect("partial file");

    assert_eq!(c.t.state.downloads.resume_all().await.expect("resume"), 1);
    let ready = c.wait_for(&record.id, "ready").await;
    assert_eq!(str_of(&ready, "file_path"), target.to_string_lossy());
    assert_eq!(sha_of_file(&str_of(&ready, "file_path")), sha);
    assert_eq!(
        c.server.ranges("plain", "restart.gguf"),
        vec![format!("bytes={}-", SIZE / 2)]
    );
}

#[tokio::test]
async fn a_wrong_sha256_fails_and_leaves_no_file() {
    let c = Ctx::new().await;
    c.server.add("model.gguf", gguf_bytes(5));
    let wrong = "0".repeat(64);
    let model = c
        .create(json!({
            "name": "corrupt",
            "backend": "llama",
            "source": c.server.url("plain", "model.gguf"),
            "sha256": wrong,
        }))
        .await;
    let id = str_of(&model, "id");
    let failed = c.wait_for(&id, "failed").await;
    let error = str_of(&failed, "error");
    assert!(
        error.starts_with(&format!("sha256 mismatch: expected {wrong}, got ")),
        "{error}"
    );
    assert!(failed["file_path"].is_null());
    assert!(
        files_under(&c.models_dir(&id)).is_empty(),
        "a file was left"
    );
    // Users do not see a model without a file.
    let (_, list) = c.t.get("/api/models", Some(&c.user.access)).await;
    assert!(items(&list).is_empty(), "{list}");
}

#[tokio::test]
async fn a_file_that_is_not_gguf_fails() {
    let c = Ctx::new().await;
    c.server
        .add("page.gguf", b"<html>Sign in to continue</html>".to_vec());
    let model = c
        .create(json!({
            "name": "html-page",
            "backend": "llama",
            "source": c.server.url("plain", "page.gguf"),
        }))
        .await;
    let id = str_of(&model, "id");
    let failed = c.wait_for(&id, "failed").await;
    assert!(str_of(&failed, "error").contains("GGUF"), "{failed}");
    assert!(files_under(&c.models_dir(&id)).is_empty());
}

#[tokio::test]
async fn dead_urls_and_missing_files_fail_with_a_reason() {
    // A port that refuses connections.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let c = Ctx::with_origins(vec![format!("http://{closed}")]).await;
    let dead = c
        .create(json!({
            "name": "dead",
            "backend": "llama",
            "source": format!("http://{closed}/model.gguf"),
        }))
        .await;
    let missing = c
        .create(json!({
            "name": "missing",
            "backend": "llama",
            "source": c.server.url("plain", "nothing-here.gguf"),
        }))
        .await;
    let dead = c.wait_for(&str_of(&dead, "id"), "failed").await;
    assert!(
        str_of(&dead, "error").contains("could not connect"),
        "{dead}"
    );
    let missing = c.wait_for(&str_of(&missing, "id"), "failed").await;
    assert!(str_of(&missing, "error").contains("404"), "{missing}");

    // Retrying with the same source is allowed once it failed.
    c.server.add("nothing-here.gguf", gguf_bytes(6));
    let id = str_of(&missing, "id");
    let (status, body) =
        c.t.patch(
            &format!("/api/models/{id}"),
            Some(&c.tech.access),
            &json!({"source": c.server.url("plain", "nothing-here.gguf")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "downloading");
    c.wait_for(&id, "ready").await;
    // The host still answers.
    let (status, _) = c.t.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_input_is_rejected_with_the_field_named() {
    let c = Ctx::new().await;
    let good = json!({"name": "ok", "backend": "llama", "source": "https://example.com/m.gguf"});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let cases = [
        (with("name", json!("has spaces")), "name"),
        (with("name", json!("")), "name"),
        (with("backend", json!("onnx")), "backend"),
        (with("source", json!("ftp://example.com/m.gguf")), "source"),
        (with("source", json!("models/m.gguf")), "source"),
        (with("source", json!("/no/such/file.gguf")), "source"),
        (with("sha256", json!("abc")), "sha256"),
        (with("slots", json!(0)), "slots"),
        (with("slots", json!(65)), "slots"),
        (with("sampling", json!({"top_p": 0})), "sampling"),
        (
            with("access", json!({"everyone": false, "users": ["nobody"]})),
            "access.users",
        ),
        (with("colour", json!("blue")), "colour"),
        (with("slots", json!("four")), "slots"),
    ];
    for (body, field) in cases {
        let (status, json) = c.t.post("/api/models", Some(&c.tech.access), &body).await;
        assert_error(
            status,
            &json,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        let fields: Vec<&str> = json["details"]
            .as_array()
            .map(|d| d.iter().filter_map(|e| e["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            fields.contains(&field),
            "{body} should name `{field}`: {json}"
        );
    }
    // Malformed JSON.
    let mut request = support::request(Method::POST, "/api/models", Some(&c.tech.access), None);
    request.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("header"),
    );
    *request.body_mut() = Body::from("{\"name\": ");
    let resp = c.t.send(request).await;
    assert_error(
        resp.status,
        &resp.json(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );
    // A directory with a sha256.
    let dir = c.data.path().to_string_lossy().into_owned();
    let (status, json) =
        c.t.post(
            "/api/models",
            Some(&c.tech.access),
            &json!({"name": "dir", "backend": "candle", "source": dir, "sha256": "a".repeat(64)}),
        )
        .await;
    assert_error(
        status,
        &json,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    // Nothing was stored.
    let (_, list) = c.t.get("/api/models", Some(&c.tech.access)).await;
    assert!(items(&list).is_empty(), "{list}");
    // Duplicate names.
    let local = c.data.path().join("local.gguf");
    std::fs::write(&local, gguf_bytes(7)).expect("local file");
    let body = json!({"name": "dup", "backend": "llama", "source": local});
    c.create(body.clone()).await;
    let (status, json) = c.t.post("/api/models", Some(&c.tech.access), &body).await;
    assert_error(status, &json, StatusCode::CONFLICT, "conflict");
    // PATCH checks the same way; an unknown model is 404.
    let (status, json) =
        c.t.patch(
            "/api/models/nope",
            Some(&c.tech.access),
            &json!({"description": "x"}),
        )
        .await;
    assert_error(status, &json, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn local_paths_are_used_in_place() {
    let c = Ctx::new().await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("local.gguf");
    let data = gguf_bytes(8);
    std::fs::write(&file, &data).expect("local file");
    let sha = hex(&Sha256::digest(&data));

    let model = c
        .create(json!({"name": "local", "backend": "llama", "source": file}))
        .await;
    assert_eq!(model["status"], "ready", "ready at once: {model}");
    assert_eq!(model["file_path"], file.to_string_lossy().as_ref());
    assert_eq!(model["size_bytes"], SIZE as u64);

    // With a sha256 the file is checked in the background.
    let checked = c
        .create(json!({"name": "local-checked", "backend": "llama", "source": file, "sha256": sha}))
        .await;
    c.wait_for(&str_of(&checked, "id"), "ready").await;
    let bad = c
        .create(json!({"name": "local-bad", "backend": "llama", "source": file, "sha256": "1".repeat(64)}))
        .await;
    let bad = c.wait_for(&str_of(&bad, "id"), "failed").await;
    assert!(str_of(&bad, "error").contains("sha256 mismatch"), "{bad}");

    // A file that says .gguf but is not.
    let fake = dir.path().join("fake.gguf");
    std::fs::write(&fake, b"not a model").expect("fake file");
    let (status, json) =
        c.t.post(
            "/api/models",
            Some(&c.tech.access),
            &json!({"name": "fake", "backend": "llama", "source": fake}),
        )
        .await;
    assert_error(
        status,
        &json,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    // Deleting never touches a local source.
    for m in [&model, &checked, &bad] {
        let (status, _) =
            c.t.delete(
                &format!("/api/models/{}", str_of(m, "id")),
                Some(&c.tech.access),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    assert_eq!(std::fs::read(&file).expect("still there"), data);
}

#[tokio::test]
async fn a_new_source_swaps_in_when_ready_and_delete_removes_files() {
    let c = Ctx::new().await;
    let sha_a = c.server.add("a.gguf", gguf_bytes(9));
    let sha_b = c.server.add("b.gguf", gguf_bytes(10));
    let model = c
        .create(json!({"name": "swapper", "backend": "llama", "source": c.server.url("plain", "a.gguf")}))
        .await;
    let id = str_of(&model, "id");
    let first = c.wait_for(&id, "ready").await;
    let path_a = str_of(&first, "file_path");

    // A chat names the model.
    let (status, chat) =
        c.t.post(
            "/api/chats",
            Some(&c.user.access),
            &json!({"model": "swapper", "title": "About the model"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let chat_id = str_of(&chat, "id");
    let (status, _) =
        c.t.patch(
            &format!("/api/chats/{chat_id}"),
            Some(&c.user.access),
            &json!({"title": "Still about swapper"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    c.server.files.slow_chunks.store(10, Ordering::Relaxed);
    let (status, edited) = c
        .t
        .patch(
            &format!("/api/models/{id}"),
            Some(&c.tech.access),
            &json!({"source": c.server.url("slow", "b.gguf"), "description": "Now B", "context_length": 2048}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["status"], "downloading");
    assert_eq!(
        edited["file_path"],
        path_a.as_str(),
        "the old file serves meanwhile"
    );
    assert_eq!(edited["description"], "Now B");
    // Users keep using it during the swap.
    let (status, seen) =
        c.t.get(&format!("/api/models/{id}"), Some(&c.user.access))
            .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert!(Path::new(&path_a).exists());

    let swapped = c.wait_for(&id, "ready").await;
    let path_b = str_of(&swapped, "file_path");
    assert_ne!(path_a, path_b);
    assert_eq!(sha_of_file(&path_b), sha_b);
    assert_ne!(sha_b, sha_a);
    assert!(!Path::new(&path_a).exists(), "the old file was removed");
    assert_eq!(swapped["context_length"], 2048);

    // Renaming onto another model's name conflicts.
    let local = c.data.path().join("other.gguf");
    std::fs::write(&local, gguf_bytes(11)).expect("file");
    c.create(json!({"name": "other", "backend": "llama", "source": local}))
        .await;
    let (status, json) =
        c.t.patch(
            &format!("/api/models/{id}"),
            Some(&c.tech.access),
            &json!({"name": "other"}),
        )
        .await;
    assert_error(status, &json, StatusCode::CONFLICT, "conflict");

    // Delete: files gone, the model gone from lists, the chat keeps its name.
    let (status, _) =
        c.t.delete(&format!("/api/models/{id}"), Some(&c.tech.access))
            .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!c.models_dir(&id).exists(), "the model directory is gone");
    let (status, _) =
        c.t.get(&format!("/api/models/{id}"), Some(&c.tech.access))
            .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = c.t.get("/api/models", Some(&c.user.access)).await;
    assert!(!support::field_of_items(&list, "name").contains(&json!("swapper")));
    let (status, chat) =
        c.t.get(&format!("/api/chats/{chat_id}"), Some(&c.user.access))
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(chat["model"], "swapper", "{chat}");

    // Every change is in the audit log.
    let (_, audit) = c.t.get("/api/audit?limit=200", Some(&c.tech.access)).await;
    let actions: Vec<Value> = support::field_of_items(&audit, "action");
    for action in ["model.create", "model.update", "model.delete"] {
        assert!(
            actions.contains(&json!(action)),
            "{action} not in {actions:?}"
        );
    }
}

#[tokio::test]
async fn deleting_a_model_cancels_its_download() {
    let c = Ctx::new().await;
    c.server.add("big.gguf", gguf_bytes(12));
    c.server.files.slow_chunks.store(200, Ordering::Relaxed);
    let model = c
        .create(json!({"name": "cancelled", "backend": "llama", "source": c.server.url("slow", "big.gguf")}))
        .await;
    let id = str_of(&model, "id");
    c.server.wait_for_request("/slow/big.gguf").await;
    assert!(c.t.state.downloads.is_active(&id));
    let (status, _) =
        c.t.delete(&format!("/api/models/{id}"), Some(&c.tech.access))
            .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!c.t.state.downloads.is_active(&id));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !c.models_dir(&id).exists(),
        "nothing written after the delete"
    );
}

#[tokio::test]
async fn a_start_that_comes_after_a_removal_or_another_edit_follows_the_record() {
    let c = Ctx::new().await;
    for (name, seed) in [("big.gguf", 12), ("one.gguf", 13), ("two.gguf", 14)] {
        c.server.add(name, gguf_bytes(seed));
    }
    c.server.files.slow_chunks.store(20, Ordering::Relaxed);

    // An edit's start that lost the race to a removal: nothing runs, and
    // nothing is written for the model that is gone.
    let model = c
        .create(json!({"name": "removed", "backend": "llama", "source": c.server.url("slow", "big.gguf")}))
        .await;
    let id = str_of(&model, "id");
    let record =
        c.t.store
            .get_model(&id)
            .await
            .expect("read")
            .expect("model");
    let (status, _) =
        c.t.delete(&format!("/api/models/{id}"), Some(&c.tech.access))
            .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    c.t.state.downloads.start(&record).await;
    assert!(
        !c.t.state.downloads.is_active(&id),
        "a job runs for a removed model"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(files_under(&c.models_dir(&id)).is_empty());

    // An edit's start that comes after a later edit's (the two raced
    // past their record writes): it fetches what the record says now, not
    // the source it was called with.
    let model = c
        .create(json!({"name": "edited", "backend": "llama", "source": c.server.url("slow", "one.gguf")}))
        .await;
    let id = str_of(&model, "id");
    let stale =
        c.t.store
            .get_model(&id)
            .await
            .expect("read")
            .expect("model");
    let (status, body) =
        c.t.patch(
            &format!("/api/models/{id}"),
            Some(&c.tech.access),
            &json!({"source": c.server.url("slow", "two.gguf")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    c.t.state.downloads.start(&stale).await;
    let ready = c.wait_for(&id, "ready").await;
    let file = str_of(&ready, "file_path");
    assert!(
        file.ends_with("two.gguf"),
        "the record names two.gguf but holds {file}"
    );
}

#[tokio::test]
async fn users_see_only_models_they_may_use_and_cannot_change_them() {
    let c = Ctx::new().await;
    let admin_user = c.t.insert_user("admin", Role::Admin).await;
    let admin = c.t.issue(&admin_user).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("m.gguf");
    std::fs::write(&file, gguf_bytes(13)).expect("file");
    let mk = |name: &str, access: Value| json!({"name": name, "backend": "llama", "source": file, "access": access});
    c.create(mk("for-all", json!({"everyone": true}))).await;
    c.create(mk(
        "for-admins",
        json!({"everyone": false, "roles": ["admin"]}),
    ))
    .await;
    let mine = c
        .create(mk(
            "for-someone",
            json!({"everyone": false, "users": [c.user.id]}),
        ))
        .await;
    let hidden = c.create(mk("for-techs", json!({"everyone": false}))).await;
    // Still downloading: nobody but technicians sees it.
    c.server.add("slow.gguf", gguf_bytes(14));
    c.server.files.slow_chunks.store(200, Ordering::Relaxed);
    c.create(json!({"name": "coming-soon", "backend": "llama", "source": c.server.url("slow", "slow.gguf")}))
        .await;

    let names = |list: &Value| support::field_of_items(list, "name");
    let (_, list) = c.t.get("/api/models", Some(&c.user.access)).await;
    assert_eq!(names(&list), vec![json!("for-all"), json!("for-someone")]);
    let (_, list) = c.t.get("/api/models", Some(&admin.access)).await;
    assert_eq!(names(&list), vec![json!("for-admins"), json!("for-all")]);
    let (_, list) = c.t.get("/api/models", Some(&c.tech.access)).await;
    assert_eq!(names(&list).len(), 5);
    let coming = items(&list)
        .iter()
        .find(|m| m["name"] == "coming-soon")
        .expect("listed");
    assert!(
        coming["progress"].is_object(),
        "technicians see progress: {coming}"
    );

    let hidden_id = str_of(&hidden, "id");
    let (status, json) =
        c.t.get(&format!("/api/models/{hidden_id}"), Some(&c.user.access))
            .await;
    assert_error(status, &json, StatusCode::NOT_FOUND, "not_found");
    let (status, _) =
        c.t.get(
            &format!("/api/models/{}", str_of(&mine, "id")),
            Some(&c.user.access),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    for token in [&c.user.access, &admin.access] {
        let (status, json) =
            c.t.post(
                "/api/models",
                Some(token),
                &mk("sneaky", json!({"everyone": true})),
            )
            .await;
        assert_error(status, &json, StatusCode::FORBIDDEN, "forbidden");
        let (status, json) =
            c.t.patch(
                &format!("/api/models/{hidden_id}"),
                Some(token),
                &json!({"access": {"everyone": true}}),
            )
            .await;
        assert_error(status, &json, StatusCode::FORBIDDEN, "forbidden");
        let (status, json) =
            c.t.delete(&format!("/api/models/{hidden_id}"), Some(token))
                .await;
        assert_error(status, &json, StatusCode::FORBIDDEN, "forbidden");
    }
    // Nothing changed.
    let (_, list) = c.t.get("/api/models", Some(&c.tech.access)).await;
    assert_eq!(names(&list).len(), 5);
    let hidden = c.model(&hidden_id).await;
    assert_eq!(hidden["access"]["everyone"], false);

    // The registry functions the runtime uses agree.
    let user =
        c.t.store
            .get_user(&c.user.id)
            .await
            .expect("store")
            .expect("user");
    let usable = corral_host::registry::usable_models(&c.t.state, &user)
        .await
        .expect("usable");
    assert_eq!(usable.len(), 2);
    assert!(
        corral_host::registry::find_usable(&c.t.state, &user, "for-all")
            .await
            .is_ok()
    );
    assert!(
        corral_host::registry::find_usable(&c.t.state, &user, "for-techs")
            .await
            .is_err()
    );
}

/// The demo model (`CORRAL_DEMO_MODEL`, see scripts/fetch-demo-model.sh),
/// downloaded over HTTP and checked.
#[tokio::test]
async fn the_demo_model_downloads() {
    let Some(path) = support::model_from_env("CORRAL_DEMO_MODEL", support::DEMO_MODEL_HOW) else {
        return;
    };
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let c = Ctx::new().await;
    let sha = c.server.add("demo.gguf", data);
    let model = c
        .create(json!({
            "name": "gemma-3-270m",
            "backend": "llama",
            "source": c.server.url("flaky", "demo.gguf"),
            "sha256": sha,
        }))
        .await;
    let ready = c.wait_for(&str_of(&model, "id"), "ready").await;
    assert_eq!(sha_of_file(&str_of(&ready, "file_path")), sha);
}
