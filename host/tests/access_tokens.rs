//! Access tokens expire: a token past its `exp` is refused on every route
//! (the refresh token still gets a new one), a token signed with another
//! key is refused, and tokens are issued with the configured lifetime.

#[path = "support.rs"]
mod support;

use axum::http::StatusCode;
use corral_host::auth::{Claims, TokenKeys};
use corral_host::config::Config;
use corral_sdk::Role;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use support::{assert_error, TestApp};

/// The store's signing secret, as the host keeps it.
async fn signing_secret(t: &TestApp) -> String {
    match t.store.get_setting("internal.jwt_secret").await {
        Ok(Some(serde_json::Value::String(secret))) => secret,
        other => panic!("no signing secret in the store: {other:?}"),
    }
}

fn sign(secret: &[u8], claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("signing")
}

#[tokio::test]
async fn an_expired_access_token_is_refused_and_the_refresh_token_renews_it() {
    let t = TestApp::new().await;
    let account = t.signed_in("ada", Role::User).await;
    let secret = signing_secret(&t).await;
    let now = chrono::Utc::now().timestamp();
    let claims = |iat: i64, exp: i64| Claims {
        sub: account.id.clone(),
        ver: 0,
        iat,
        exp,
    };

    // The host's own key, the account's current token version: only `exp`
    // differs between the two.
    let live = sign(secret.as_bytes(), &claims(now - 60, now + 60));
    let (status, me) = t.get("/api/me", Some(&live)).await;
    assert_eq!(status, StatusCode::OK, "a live token: {me}");
    assert_eq!(me["username"], "ada");

    // A minute past its expiry (well past the few seconds of leeway).
    let expired = sign(secret.as_bytes(), &claims(now - 3600, now - 60));
    for path in ["/api/me", "/api/chats", "/api/me/keys"] {
        let (status, body) = t.get(path, Some(&expired)).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let (status, body) = t
        .post("/api/chats", Some(&expired), &json!({"model": "m"}))
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    // A token the host did not sign is refused however fresh.
    let forged = sign(
        b"not the host's secret, but long enough to look like one",
        &claims(now, now + 3600),
    );
    let (status, body) = t.get("/api/me", Some(&forged)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    // The refresh token is what renews access.
    let (status, renewed) = t
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refresh_token": account.refresh}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let fresh = renewed["access_token"].as_str().expect("an access token");
    let (status, _) = t.get("/api/me", Some(fresh)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn tokens_carry_the_configured_lifetime() {
    let t = TestApp::with_config(Config {
        access_token_ttl_secs: 30,
        ..Config::default()
    })
    .await;
    let user = t.insert_user("bo", Role::User).await;
    let account = t.issue(&user).await;
    let claims = t
        .state
        .tokens
        .verify(&account.access)
        .expect("a token the host accepts");
    assert_eq!(claims.exp - claims.iat, 30, "{claims:?}");

    // The same key with an `exp` in the past: the check itself refuses it.
    let keys = TokenKeys::new(signing_secret(&t).await.as_bytes(), 30);
    let now = chrono::Utc::now().timestamp();
    let old = sign(
        signing_secret(&t).await.as_bytes(),
        &Claims {
            sub: user.id.clone(),
            ver: 0,
            iat: now - 90,
            exp: now - 60,
        },
    );
    assert!(keys.verify(&old).is_none(), "an expired token verified");
    let (status, body) = t.get("/api/me", Some(&old)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}
