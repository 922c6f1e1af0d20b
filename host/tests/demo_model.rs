//! The demo model is registered on the first start that names one, and
//! only then: a technician who removes it does not see it come back.

#[path = "support.rs"]
mod support;

use corral_host::config::Config;
use corral_host::registry::{register_demo_model, DEMO_MODEL_NAME};
use corral_sdk::Role;
use support::TestApp;

#[tokio::test]
async fn the_demo_model_is_registered_once() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("demo.gguf");
    let mut data = b"GGUF".to_vec();
    data.resize(4096, 7);
    std::fs::write(&file, &data).expect("demo file");

    let t = TestApp::with_config(Config {
        demo_model: Some(file.clone()),
        ..Config::default()
    })
    .await;
    let model = register_demo_model(&t.state)
        .await
        .expect("registered")
        .expect("a new model");
    assert_eq!(model.name, DEMO_MODEL_NAME);
    assert_eq!(model.backend, "llama");
    let canonical = file.canonicalize().expect("path");
    assert_eq!(model.file_path.as_deref(), canonical.to_str());

    // Everyone can pick it.
    let user = t.signed_in("ursula", Role::User).await;
    let (_, list) = t.get("/api/models", Some(&user.access)).await;
    assert_eq!(list["items"][0]["name"], DEMO_MODEL_NAME, "{list}");
    assert_eq!(list["items"][0]["status"], "ready", "{list}");

    // A second start changes nothing; nor does one after the model was
    // removed.
    assert!(register_demo_model(&t.state).await.expect("ok").is_none());
    assert!(t.store.delete_model(&model.id).await.expect("deleted"));
    assert!(register_demo_model(&t.state).await.expect("ok").is_none());
    assert!(t.store.list_models().await.expect("models").is_empty());
}

#[tokio::test]
async fn a_missing_demo_file_is_an_error_not_a_registration() {
    let t = TestApp::with_config(Config {
        demo_model: Some("/no/such/demo.gguf".into()),
        ..Config::default()
    })
    .await;
    let err = register_demo_model(&t.state).await.expect_err("no file");
    assert!(err.to_string().contains("/no/such/demo.gguf"), "{err:#}");
    assert!(t.store.list_models().await.expect("models").is_empty());
}
