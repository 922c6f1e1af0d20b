//! The model folders and who sees what of a model, against the real
//! application router: directory sources are walked within bounds, links
//! may not lead out of the model folders, and each role gets its own view.

#[path = "support.rs"]
mod support;

use std::path::Path;

use axum::http::StatusCode;
use corral_host::config::Config;
use corral_sdk::Role;
use serde_json::{json, Value};
use support::{assert_error, items, Account, TestApp};
use tempfile::TempDir;

struct Ctx {
    t: TestApp,
    models: TempDir,
    tech: Account,
    admin: Account,
    user: Account,
}

impl Ctx {
    async fn new() -> Self {
        let models = tempfile::tempdir().expect("model folder");
        let t = TestApp::with_config(Config {
            model_dirs: Some(vec![models.path().to_path_buf()]),
            ..Config::default()
        })
        .await;
        let tech = t.signed_in("tech", Role::Technician).await;
        let admin = t.signed_in("boss", Role::Admin).await;
        let user = t.signed_in("ursula", Role::User).await;
        Ctx {
            t,
            models,
            tech,
            admin,
            user,
        }
    }

    async fn add(&self, body: &Value) -> (StatusCode, Value) {
        self.t
            .post("/api/models", Some(&self.tech.access), body)
            .await
    }
}

/// Asserts a refusal naming `source`, and that `message` is in it.
fn assert_source_refused(status: StatusCode, body: &Value, message: &str) {
    assert_error(
        status,
        body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(body["details"][0]["field"], "source", "{body}");
    let text = body["details"][0]["message"].as_str().unwrap_or_default();
    assert!(text.contains(message), "{body}");
}

#[tokio::test]
async fn a_directory_source_is_walked_within_bounds() {
    let c = Ctx::new().await;
    let wide = c.models.path().join("wide");
    std::fs::create_dir(&wide).expect("dir");
    for i in 0..10_001 {
        std::fs::write(wide.join(format!("f{i}")), b"").expect("file");
    }
    let (status, body) = c
        .add(&json!({"name": "wide", "backend": "candle", "kind": "embedding", "source": wide}))
        .await;
    assert_source_refused(status, &body, "more than 10000 entries");

    let mut deep = c.models.path().join("deep");
    for _ in 0..10 {
        deep = deep.join("d");
    }
    std::fs::create_dir_all(&deep).expect("dirs");
    let (status, body) = c
        .add(&json!({"name": "deep", "backend": "candle", "kind": "embedding", "source": c.models.path().join("deep")}))
        .await;
    assert_source_refused(status, &body, "nested deeper than 8 levels");

    // A modest directory is ready at once, with its size.
    let fine = c.models.path().join("fine");
    std::fs::create_dir_all(fine.join("sub")).expect("dirs");
    std::fs::write(fine.join("config.json"), b"{}").expect("file");
    std::fs::write(fine.join("sub").join("weights"), vec![0u8; 1000]).expect("file");
    let (status, body) = c
        .add(&json!({"name": "fine", "backend": "candle", "kind": "embedding", "source": fine}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["size_bytes"], 1002);
}

#[tokio::test]
async fn a_missing_file_is_told_apart_only_inside_the_model_folders() {
    let c = Ctx::new().await;
    let (status, body) = c
        .add(&json!({"name": "gone", "backend": "llama", "source": c.models.path().join("gone.gguf")}))
        .await;
    assert_source_refused(status, &body, "names no readable file");
    for outside in ["/etc/passwd", "/no/such/file.gguf"] {
        let (status, body) = c
            .add(&json!({"name": "outside", "backend": "llama", "source": outside}))
            .await;
        assert_source_refused(status, &body, "inside one of the model folders");
        assert!(!body.to_string().contains(outside), "{body}");
    }
    // Not a GGUF file, inside the folders.
    let text = c.models.path().join("notes.gguf");
    std::fs::write(&text, b"just text").expect("file");
    let (status, body) = c
        .add(&json!({"name": "notes", "backend": "llama", "source": text}))
        .await;
    assert_source_refused(status, &body, "not a GGUF file");
}

#[tokio::test]
async fn each_role_gets_its_own_view_of_a_model() {
    let c = Ctx::new().await;
    let file = c.models.path().join("m.gguf");
    let mut data = b"GGUF".to_vec();
    data.resize(4096, 7);
    std::fs::write(&file, &data).expect("file");
    let (status, created) = c
        .add(&json!({
            "name": "shared",
            "backend": "llama",
            "source": file,
            "description": "for ursula and admins",
            "access": {"everyone": false, "roles": ["admin"], "users": [c.user.id]},
        }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let staff_only = [
        "source",
        "sha256",
        "file_path",
        "error",
        "threads",
        "slots",
        "sampling",
        "chat_template",
        "progress",
    ];

    let (_, list) = c.t.get("/api/models", Some(&c.user.access)).await;
    let (_, one) =
        c.t.get(&format!("/api/models/{id}"), Some(&c.user.access))
            .await;
    for view in [&items(&list)[0], &one] {
        for field in staff_only.iter().chain(&["access"]) {
            assert!(view.get(field).is_none(), "a user sees `{field}`: {view}");
        }
        assert_eq!(view["name"], "shared");
        assert_eq!(view["usable"], true);
        assert_eq!(view["description"], "for ursula and admins");
    }

    // Admins manage accounts: they see who may use it, not where it is.
    let (_, view) =
        c.t.get(&format!("/api/models/{id}"), Some(&c.admin.access))
            .await;
    assert_eq!(view["access"]["users"], json!([c.user.id]), "{view}");
    for field in staff_only {
        assert!(view.get(field).is_none(), "an admin sees `{field}`: {view}");
    }

    // Technicians see everything.
    let (_, view) =
        c.t.get(&format!("/api/models/{id}"), Some(&c.tech.access))
            .await;
    let canonical = std::fs::canonicalize(&file).expect("canonical");
    assert_eq!(view["file_path"], canonical.to_string_lossy().as_ref());
    assert_eq!(view["source"], file.to_string_lossy().as_ref());
    assert!(
        view["sha256"].is_null() && view["error"].is_null(),
        "{view}"
    );
    assert_eq!(view["slots"], 4);
}

/// A server that streams `chunks` MiB of a GGUF-looking file without
/// saying its length up front; returns its origin.
async fn streaming_server(chunks: usize) -> String {
    use axum::body::{Body, Bytes};
    let app = axum::Router::new().route(
        "/stream/model.gguf",
        axum::routing::get(move || async move {
            let parts = (0..chunks).map(|i| {
                let mut chunk = vec![i as u8; 1024 * 1024];
                if i == 0 {
                    chunk[..4].copy_from_slice(b"GGUF");
                }
                Ok::<_, std::io::Error>(Bytes::from(chunk))
            });
            Body::from_stream(futures::stream::iter(parts))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the file server");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("file server");
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_download_without_a_length_stops_at_max_download_bytes() {
    let origin = streaming_server(3).await;
    let data = tempfile::tempdir().expect("data directory");
    let limit = 1536 * 1024;
    let t = TestApp::with_config(Config {
        data_dir: data.path().to_path_buf(),
        download_allowed_origins: vec![origin.clone()],
        max_download_bytes: limit,
        ..Config::default()
    })
    .await;
    let tech = t.signed_in("tech", Role::Technician).await;
    let (status, created) = t
        .post(
            "/api/models",
            Some(&tech.access),
            &json!({"name": "endless", "backend": "llama", "source": format!("{origin}/stream/model.gguf")}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let mut model = created;
    for _ in 0..200 {
        let (_, m) = t
            .get(&format!("/api/models/{id}"), Some(&tech.access))
            .await;
        model = m;
        if model["status"] != "downloading" && !t.state.downloads.is_active(&id) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(model["status"], "failed", "{model}");
    let error = model["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&limit.to_string()) && error.contains("max_download_bytes"),
        "{error}"
    );
    let dir = data.path().join("models").join(&id);
    let left: Vec<_> = walk(&dir);
    assert!(left.is_empty(), "{left:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The model's record as the store has it now.
async fn stored(c: &Ctx, id: &str) -> corral_host::model::ModelRecord {
    c.t.store.get_model(id).await.expect("read").expect("model")
}

#[tokio::test]
async fn a_failed_load_of_a_replaced_file_leaves_the_new_one_ready() {
    // An edit swapped the file while a load of the old one was under way:
    // that load's failure says nothing of the new file.
    let c = Ctx::new().await;
    let model = support::model_record("swapped", "llama", "/srv/models/new.gguf");
    c.t.store.create_model(&model).await.expect("model");
    let downloads = &c.t.state.downloads;
    downloads
        .mark_unloadable(&model.id, Path::new("/srv/models/old.gguf"), "no such file")
        .await;
    let kept = stored(&c, &model.id).await;
    assert_eq!(kept.status, corral_host::model::ModelStatus::Ready);
    assert_eq!(kept.file_path.as_deref(), Some("/srv/models/new.gguf"));

    // The model's own file failing does mark it.
    downloads
        .mark_unloadable(&model.id, Path::new("/srv/models/new.gguf"), "not a model")
        .await;
    let failed = stored(&c, &model.id).await;
    assert_eq!(failed.status, corral_host::model::ModelStatus::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("not a model")),
        "{:?}",
        failed.error
    );

    // A record that names its file through a link (a linked data folder)
    // names the file a load resolved.
    let real = c.models.path().join("real");
    std::fs::create_dir(&real).expect("folder");
    std::fs::write(real.join("m.gguf"), b"GGUF").expect("file");
    let linked = c.models.path().join("linked");
    std::os::unix::fs::symlink(&real, &linked).expect("link");
    let model = support::model_record("linked", "llama", &linked.join("m.gguf").to_string_lossy());
    c.t.store.create_model(&model).await.expect("model");
    let resolved = std::fs::canonicalize(real.join("m.gguf")).expect("resolved");
    downloads
        .mark_unloadable(&model.id, &resolved, "not a model")
        .await;
    let failed = stored(&c, &model.id).await;
    assert_eq!(failed.status, corral_host::model::ModelStatus::Failed);
}

#[tokio::test]
async fn the_audit_log_shows_admins_no_model_sources_or_paths() {
    let c = Ctx::new().await;
    let file = c.models.path().join("secret-place.gguf");
    let mut data = b"GGUF".to_vec();
    data.resize(4096, 7);
    std::fs::write(&file, &data).expect("file");
    let (status, created) = c
        .add(&json!({"name": "audited", "backend": "llama", "source": file}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["id"].as_str().expect("id");
    let (status, body) =
        c.t.patch(
            &format!("/api/models/{id}"),
            Some(&c.tech.access),
            &json!({"description": "moved", "threads": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let place = c.models.path().to_string_lossy().into_owned();
    let (status, tech_view) = c.t.get("/api/audit?limit=200", Some(&c.tech.access)).await;
    assert_eq!(status, StatusCode::OK, "{tech_view}");
    assert!(tech_view.to_string().contains(&place), "{tech_view}");

    let (status, admin_view) = c.t.get("/api/audit?limit=200", Some(&c.admin.access)).await;
    assert_eq!(status, StatusCode::OK, "{admin_view}");
    let shown = admin_view.to_string();
    assert!(!shown.contains(&place), "{admin_view}");
    assert!(!shown.contains("secret-place"), "{admin_view}");
    let entries = items(&admin_view);
    let update = entries
        .iter()
        .find(|e| e["action"] == "model.update")
        .expect("the update is listed");
    assert_eq!(update["details"]["name"], "audited", "{update}");
    let changed: Vec<&str> = update["details"]["changed"]
        .as_array()
        .expect("changed fields")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        changed.contains(&"description") && changed.contains(&"threads"),
        "{update}"
    );
    let create = entries
        .iter()
        .find(|e| e["action"] == "model.create")
        .expect("the creation is listed");
    assert!(create["details"].get("source").is_none(), "{create}");
}
