//! Limits at the API: per-account caps, the time limit of ordinary
//! requests, and the security headers on every kind of answer.

mod support;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use corral_host::config::Config;
use corral_sdk::Role;
use serde_json::json;
use support::{assert_error, request, Resp, TestApp};

fn assert_security_headers(r: &Resp, what: &str) {
    assert_eq!(
        r.header(header::X_CONTENT_TYPE_OPTIONS).as_deref(),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        r.header(header::REFERRER_POLICY).as_deref(),
        Some("no-referrer"),
        "{what}"
    );
    assert_eq!(
        r.header(header::X_FRAME_OPTIONS).as_deref(),
        Some("DENY"),
        "{what}"
    );
    let csp = r
        .header(header::CONTENT_SECURITY_POLICY)
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"));
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "frame-ancestors 'none'",
        // Markdown images are not loaded (the UI names them); this is the
        // second line: no answer's image reaches another origin.
        "img-src 'self' data:",
    ] {
        assert!(
            csp.split(';').any(|d| d.trim() == directive),
            "{what}: `{directive}` missing from {csp}"
        );
    }
    assert!(!csp.contains("unsafe"), "{what}: {csp}");
    assert_eq!(
        r.header(header::HeaderName::from_static(
            "cross-origin-opener-policy"
        ))
        .as_deref(),
        Some("same-origin"),
        "{what}"
    );
}

#[tokio::test]
async fn every_kind_of_answer_carries_the_security_headers() {
    let t = TestApp::new().await;
    let ok = t.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_security_headers(&ok, "200");
    assert_eq!(ok.header(header::STRICT_TRANSPORT_SECURITY), None);

    let missing = t.call(Method::GET, "/api/nowhere", None, None).await;
    assert_error(
        missing.status,
        &missing.json(),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_security_headers(&missing, "404");

    let anonymous = t.call(Method::GET, "/api/me", None, None).await;
    assert_error(
        anonymous.status,
        &anonymous.json(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_security_headers(&anonymous, "401");

    let big = json!({ "username": "x".repeat(2 * 1024 * 1024), "password": "p" });
    let too_big = t
        .call(Method::POST, "/api/auth/login", None, Some(&big))
        .await;
    assert_error(
        too_big.status,
        &too_big.json(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert_security_headers(&too_big, "413");

    let docs = t.call(Method::GET, "/docs/", None, None).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert_security_headers(&docs, "/docs/");
}

/// What the API answers (chats, tickets, accounts) is kept out of the
/// browser's disk cache, where it would outlive signing out.
#[tokio::test]
async fn api_answers_are_not_stored_in_caches() {
    let t = TestApp::new().await;
    let ada = t.signed_in("ada", Role::User).await;
    let no_store = |r: &Resp| r.header(header::CACHE_CONTROL);
    for path in ["/api/me", "/api/chats", "/v1/models", "/api/nowhere"] {
        let r = t.call(Method::GET, path, Some(&ada.access), None).await;
        assert_eq!(
            no_store(&r).as_deref(),
            Some("no-store"),
            "{path}: {:?}",
            r.headers
        );
    }
    let anonymous = t.call(Method::GET, "/api/me", None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(no_store(&anonymous).as_deref(), Some("no-store"));
    // Health checks and the API description are not private.
    let health = t.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(no_store(&health), None);
}

fn from_peer(path: &str, peer: [u8; 4], forwarded_proto: Option<&str>) -> Request<Body> {
    let mut request = request(Method::GET, path, None, None);
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((peer, 40000))));
    if let Some(proto) = forwarded_proto {
        request
            .headers_mut()
            .insert("x-forwarded-proto", proto.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn hsts_is_sent_when_a_trusted_proxy_says_https() {
    let t = TestApp::with_config(Config {
        trusted_proxies: vec!["10.0.0.1".parse().unwrap()],
        ..Config::default()
    })
    .await;
    let hsts = |r: &Resp| r.header(header::STRICT_TRANSPORT_SECURITY);

    let behind_tls = t
        .send(from_peer("/healthz", [10, 0, 0, 1], Some("https")))
        .await;
    assert!(
        hsts(&behind_tls).is_some_and(|v| v.starts_with("max-age=")),
        "{:?}",
        behind_tls.headers
    );
    let plain = t
        .send(from_peer("/healthz", [10, 0, 0, 1], Some("http")))
        .await;
    assert_eq!(hsts(&plain), None);
    // Anyone else claiming HTTPS is not believed.
    let spoofed = t
        .send(from_peer("/healthz", [10, 0, 0, 9], Some("https")))
        .await;
    assert_eq!(hsts(&spoofed), None);
}

#[tokio::test]
async fn a_request_whose_body_never_ends_is_answered_with_a_timeout() {
    let t = TestApp::with_config(Config {
        request_timeout_secs: 1,
        ..Config::default()
    })
    .await;
    let body = Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap();
    let r = t.send(request).await;
    assert_error(
        r.status,
        &r.json(),
        StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
    );
    assert_security_headers(&r, "503");
}

/// A chat or a ticket thread cannot grow without end: each is read whole
/// to be shown, exported or answered.
#[tokio::test]
async fn a_chat_or_a_ticket_cannot_grow_past_its_cap() {
    let t = TestApp::with_config(Config {
        max_messages_per_chat: 3,
        max_comments_per_ticket: 2,
        ..Config::default()
    })
    .await;
    let user = t.signed_in("talker", Role::User).await;
    let token = Some(user.access.as_str());
    // The chat's model, ready: the cap is checked before anything runs.
    t.missing_chat_model().await;
    let chat = t.chat(&user.access, "long").await;
    let id = chat["id"].as_str().unwrap();
    let messages = format!("/api/chats/{id}/messages");
    let stream = format!("/api/chats/{id}/stream");
    let note = |n: usize| json!({"content": format!("note {n}")});
    let (status, body) = t.post(&messages, token, &note(0)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A question and its answer make three: let through to the model
    // (whose file is missing here).
    let (status, body) = t
        .post(&stream, token, &json!({"content": "one more?"}))
        .await;
    assert_ne!(body["code"], "limit_reached", "{status} {body}");
    let (status, body) = t.post(&messages, token, &note(1)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Now they would make four.
    let (status, body) = t
        .post(
            &format!("/api/chats/{id}/stream"),
            token,
            &json!({"content": "and one more?"}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "limit_reached");
    let (status, body) = t
        .post(&messages, token, &json!({"content": "note 2"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = t
        .post(&messages, token, &json!({"content": "note 3"}))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "limit_reached");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("start a new chat"),
        "{body}"
    );
    let (_, stored) = t.get(&format!("/api/chats/{id}"), token).await;
    assert_eq!(stored["messages"].as_array().unwrap().len(), 3, "{stored}");

    let ticket = t.ticket(&user.access, "A long story", "question").await;
    let comments = format!("/api/tickets/{}/comments", ticket["id"].as_str().unwrap());
    let held = |v: &serde_json::Value| v["comments"].as_array().map_or(0, Vec::len);
    let (_, seen) = t
        .get(
            &format!("/api/tickets/{}", ticket["id"].as_str().unwrap()),
            token,
        )
        .await;
    for n in held(&seen)..2 {
        let (status, body) = t
            .post(&comments, token, &json!({"body": format!("more {n}")}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = t.post(&comments, token, &json!({"body": "and more"})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "limit_reached");
    let staff = t.signed_in("helper", Role::Admin).await;
    let (status, body) = t
        .post(
            &comments,
            Some(&staff.access),
            &json!({"body": "closing this"}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "limit_reached");
    // Staff notes count apart: one still fits, and the owner's refusal
    // says nothing of it.
    let (status, body) = t
        .post(
            &comments,
            Some(&staff.access),
            &json!({"body": "asked them to open a new one", "internal": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = t.post(&comments, token, &json!({"body": "hello?"})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "limit_reached");
    assert!(!body.to_string().contains("note"), "{body}");
}

#[tokio::test]
async fn one_account_cannot_hold_more_than_its_caps() {
    let t = TestApp::with_config(Config {
        max_chats_per_user: 2,
        max_open_tickets_per_user: 1,
        max_api_keys_per_user: 1,
        ..Config::default()
    })
    .await;
    let user = t.signed_in("hoarder", Role::User).await;
    let token = Some(user.access.as_str());

    let first = t.chat(&user.access, "one").await;
    t.chat(&user.access, "two").await;
    let (status, body) = t
        .post("/api/chats", token, &json!({"model": "gemma-3-270m"}))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "limit_reached");
    let (status, _) = t
        .delete(
            &format!("/api/chats/{}", first["id"].as_str().unwrap()),
            token,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    t.chat(&user.access, "three").await;

    t.ticket(&user.access, "First problem", "question").await;
    let (status, body) = t
        .post(
            "/api/tickets",
            token,
            &json!({"subject": "Second problem", "body": "More.", "category": "question"}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "limit_reached");

    let (status, _) = t.post("/api/me/keys", token, &json!({"name": "a"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = t.post("/api/me/keys", token, &json!({"name": "b"})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "limit_reached");

    // The caps are per account.
    let other = t.signed_in("modest", Role::User).await;
    t.chat(&other.access, "mine").await;
    t.ticket(&other.access, "My problem", "question").await;
}

/// A search text is a value, never a pattern: one too long or holding a
/// control character (MongoDB refuses a pattern with a NUL byte) is a
/// clear 422 on every list, not a store error.
#[tokio::test]
async fn search_text_is_bounded_and_printable() {
    let t = TestApp::new().await;
    let tech = t.signed_in("tech", Role::Technician).await;
    let long = "a".repeat(corral_host::api::MAX_SEARCH_CHARS + 1);
    for list in ["/api/chats", "/api/tickets", "/api/users"] {
        for q in ["%00", "a%0Ab", long.as_str()] {
            let (status, body) = t.get(&format!("{list}?q={q}"), Some(&tech.access)).await;
            assert_error(
                status,
                &body,
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
            );
            assert_eq!(body["details"][0]["field"], "q", "{list} {body}");
        }
        let most = "a".repeat(corral_host::api::MAX_SEARCH_CHARS);
        let (status, body) = t.get(&format!("{list}?q={most}"), Some(&tech.access)).await;
        assert_eq!(status, StatusCode::OK, "{list} {body}");
    }
}

/// A chat's messages hold at most `MAX_CHAT_BYTES` of text together (a
/// chat is read whole to show, export or continue it), counted in bytes,
/// so that wide characters cannot slip past.
#[tokio::test]
async fn a_chat_holds_a_bounded_amount_of_text() {
    let t = TestApp::new().await;
    let user = t.signed_in("writer", Role::User).await;
    let token = Some(user.access.as_str());
    t.missing_chat_model().await;
    let chat = t.chat(&user.access, "long").await;
    let id = chat["id"].as_str().unwrap();
    let messages = format!("/api/chats/{id}/messages");
    // 100,000 characters of four bytes each: the most one message holds.
    let wide = "\u{1F98A}".repeat(corral_host::chat::MAX_MESSAGE_CHARS);
    let fit = corral_host::limits::MAX_CHAT_BYTES / wide.len();
    for _ in 0..fit {
        let (status, body) = t.post(&messages, token, &json!({"content": wide})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = t.post(&messages, token, &json!({"content": wide})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "limit_reached");
    assert!(
        body["message"].as_str().unwrap().contains("8 MiB"),
        "{body}"
    );
    // The same through a stream, before anything runs.
    let (status, body) = t
        .post(
            &format!("/api/chats/{id}/stream"),
            token,
            &json!({"content": wide}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "limit_reached");
    // What fits still goes in.
    let (status, body) = t.post(&messages, token, &json!({"content": "short"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, stored) = t.get(&format!("/api/chats/{id}"), token).await;
    assert_eq!(stored["messages"].as_array().unwrap().len(), fit + 1);
}
