//! A chat's own sampling settings: stored with the chat, changed and
//! cleared through the API, checked like a message's, private to the
//! chat's owner, exported with it, and applied to its answers between the
//! model's defaults and a message's own settings.
//!
//! The answer tests need `CORRAL_DEMO_MODEL` (see `chat_stream.rs`).

#[path = "support.rs"]
mod support;

use axum::http::{Method, StatusCode};
use corral_host::config::Config;
use corral_sdk::Role;
use serde_json::{json, Value};
use support::{assert_error, items, TestApp};

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

#[tokio::test]
async fn sampling_settings_are_stored_changed_and_cleared() {
    let t = TestApp::new().await;
    let ada = t.signed_in("ada", Role::User).await;
    let token = Some(ada.access.as_str());

    let (status, plain) = t
        .post(
            "/api/chats",
            token,
            &json!({"model": "m", "title": "Plain"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    assert_eq!(plain["sampling"], json!({}), "no settings: an empty object");

    let settings = json!({
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 20,
        "min_p": 0.1,
        "repeat_penalty": 1.2,
        "max_tokens": 64,
        "seed": 42,
        "stop": ["###"],
    });
    let (status, chat) = t
        .post(
            "/api/chats",
            token,
            &json!({"model": "m", "title": "Tuned", "sampling": settings}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    assert_eq!(chat["sampling"], settings);
    let path = format!("/api/chats/{}", id(&chat));
    let (_, read) = t.get(&path, token).await;
    assert_eq!(read["sampling"], settings, "read back: {read}");

    // PATCH replaces the settings as a whole.
    let fewer = json!({"max_tokens": 3, "stop": []});
    let (status, patched) = t.patch(&path, token, &json!({"sampling": fewer})).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["sampling"], fewer);
    let (_, read) = t.get(&path, token).await;
    assert_eq!(read["sampling"], fewer, "after PATCH: {read}");
    let (_, list) = t.get("/api/chats", token).await;
    let listed = items(&list)
        .iter()
        .find(|c| c["id"] == chat["id"])
        .expect("the chat is listed");
    assert_eq!(listed["sampling"], fewer);

    // Other changes keep them.
    let (status, renamed) = t.patch(&path, token, &json!({"title": "Renamed"})).await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["sampling"], fewer);

    // The JSON export carries them; the Markdown one names them.
    let export = t
        .call(Method::GET, &format!("{path}/export"), token, None)
        .await;
    assert_eq!(export.status, StatusCode::OK);
    assert_eq!(export.json()["sampling"], fewer);
    let markdown = t
        .call(
            Method::GET,
            &format!("{path}/export?format=markdown"),
            token,
            None,
        )
        .await;
    assert!(
        markdown
            .text()
            .contains(r#"- Sampling: `{"max_tokens":3,"stop":[]}`"#),
        "{}",
        markdown.text()
    );

    // `{}` clears them.
    let (status, cleared) = t.patch(&path, token, &json!({"sampling": {}})).await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["sampling"], json!({}));
    let (_, read) = t.get(&path, token).await;
    assert_eq!(read["sampling"], json!({}));
    let markdown = t
        .call(
            Method::GET,
            &format!("{path}/export?format=markdown"),
            token,
            None,
        )
        .await;
    assert!(!markdown.text().contains("Sampling"));
}

#[tokio::test]
async fn bad_sampling_settings_are_refused_naming_the_setting() {
    let t = TestApp::new().await;
    let ada = t.signed_in("ada", Role::User).await;
    let token = Some(ada.access.as_str());
    let chat = t.chat(&ada.access, "Mine").await;
    let path = format!("/api/chats/{}", id(&chat));
    let (_, before) = t
        .patch(&path, token, &json!({"sampling": {"top_k": 5}}))
        .await;

    for (sampling, named) in [
        (json!({"temperature": 6.0}), "`temperature`"),
        (json!({"top_p": 0.0}), "`top_p`"),
        (json!({"min_p": -0.5}), "`min_p`"),
        (json!({"repeat_penalty": 11}), "`repeat_penalty`"),
        (json!({"max_tokens": 0}), "`max_tokens`"),
        (json!({"stop": [""]}), "`stop`"),
        (json!({"stop": vec!["x"; 17]}), "`stop`"),
    ] {
        for (method, uri, body) in [
            (
                Method::PATCH,
                path.as_str(),
                json!({"sampling": sampling.clone()}),
            ),
            (
                Method::POST,
                "/api/chats",
                json!({"model": "m", "sampling": sampling.clone()}),
            ),
        ] {
            let r = t.call(method.clone(), uri, token, Some(&body)).await;
            let json = r.json();
            assert_error(
                r.status,
                &json,
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
            );
            assert_eq!(json["details"][0]["field"], "sampling", "{json}");
            let message = json["details"][0]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(named),
                "{method} {sampling}: {message} should name {named}"
            );
        }
    }
    // Settings that are not settings, or of the wrong type.
    for sampling in [
        json!({"temprature": 0.5}),
        json!({"max_tokens": "many"}),
        json!({"seed": -1}),
        json!([]),
    ] {
        let (status, json) = t.patch(&path, token, &json!({"sampling": sampling})).await;
        assert_error(
            status,
            &json,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }
    let (_, after) = t.get(&path, token).await;
    assert_eq!(after["sampling"], before["sampling"], "nothing was changed");
    assert_eq!(after["sampling"], json!({"top_k": 5}));
}

#[tokio::test]
async fn another_users_chat_settings_are_not_found() {
    let t = TestApp::new().await;
    let ada = t.signed_in("ada", Role::User).await;
    let eve = t.signed_in("eve", Role::Admin).await;
    let chat = t.chat(&ada.access, "Private").await;
    let path = format!("/api/chats/{}", id(&chat));
    let (status, json) = t
        .patch(
            &path,
            Some(&eve.access),
            &json!({"sampling": {"max_tokens": 1}}),
        )
        .await;
    assert_error(status, &json, StatusCode::NOT_FOUND, "not_found");
    let (_, read) = t.get(&path, Some(&ada.access)).await;
    assert_eq!(read["sampling"], json!({}), "eve changed nothing");
}

// ------------------------------------------------------ with the demo model

/// Data of the SSE events in a whole response body.
fn events(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim_start()).expect("event data is JSON"))
        .collect()
}

/// The completion tokens of the answer a stream ended with.
fn completion_tokens(events: &[Value]) -> u64 {
    let last = events.last().expect("some event");
    assert_eq!(last["type"], "done", "{events:?}");
    last["message"]["usage"]["completion_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("no usage in {last}"))
}

#[tokio::test]
async fn a_chats_settings_lie_between_the_model_and_the_message() {
    let Some(model) = support::model_from_env("CORRAL_DEMO_MODEL", support::DEMO_MODEL_HOW) else {
        return;
    };
    let t = TestApp::with_config(Config {
        backends_dir: Some(support::backends_dir(&["llama"])),
        ..Config::default()
    })
    .await;
    let tech = t.signed_in("tech", Role::Technician).await;
    let admin = t.signed_in("boss", Role::Admin).await;
    let ada = t.signed_in("ada", Role::User).await;
    let token = Some(ada.access.as_str());
    let (status, body) = t
        .post(
            "/api/models",
            Some(&tech.access),
            &json!({
                "name": "demo",
                "backend": "llama",
                "source": model,
                "context_length": 1024,
                "slots": 2,
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

    // The end-of-generation token is never sampled, so only `max_tokens`
    // ends these answers and their lengths are exact.
    let (status, chat) = t
        .post(
            "/api/chats",
            token,
            &json!({"model": "demo", "sampling": {"max_tokens": 3, "ignore_eos": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let chat = id(&chat);
    let stream = |body: Value| {
        let t = &t;
        let path = format!("/api/chats/{chat}/stream");
        async move {
            let r = t.call(Method::POST, &path, token, Some(&body)).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            events(&r.text())
        }
    };

    let by_chat = stream(json!({"content": "Count from one to twenty."})).await;
    assert_eq!(completion_tokens(&by_chat), 3, "the chat's max_tokens");

    let by_message = stream(json!({
        "content": "Count from one to twenty again.",
        "sampling": {"max_tokens": 5}
    }))
    .await;
    assert_eq!(
        completion_tokens(&by_message),
        5,
        "the message's max_tokens wins over the chat's"
    );

    let regenerate = format!("/api/chats/{chat}/regenerate");
    let r = t.call(Method::POST, &regenerate, token, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        completion_tokens(&events(&r.text())),
        3,
        "a regenerated answer follows the chat's settings"
    );

    // A spent quota still caps what the chat's settings allow: at what is
    // left after the least the message answered takes (16 bytes at eight
    // a token: 2).
    let (_, allowance) = t.get("/api/me/quota", token).await;
    let used = allowance["used"].as_u64().expect("tokens used");
    let r = t
        .call(
            Method::PUT,
            "/api/quotas",
            Some(&admin.access),
            Some(&json!({"users": {ada.id.clone(): used + 2 + 2}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let capped = stream(json!({"content": "And once more!!!"})).await;
    assert_eq!(completion_tokens(&capped), 2, "capped by the quota");
}
