//! Account rules through the application: what ends a credential that a
//! long-lived connection holds, and who may act on whose account.

#[path = "support.rs"]
mod support;

use axum::http::StatusCode;
use corral_host::error::AppError;
use corral_host::policy::{recheck, resolve};
use corral_sdk::Role;
use serde_json::json;
use support::{assert_error, TestApp, PASSWORD};

fn is_unauthorized(r: &Result<corral_host::model::User, AppError>, says: &str) -> bool {
    matches!(r, Err(AppError::Unauthorized(m)) if m.contains(says))
}

#[tokio::test]
async fn a_held_access_token_ends_with_a_password_change_or_a_disable() {
    let t = TestApp::new().await;
    let tech = t.signed_in("tech", Role::Technician).await;
    let ada = t.signed_in("ada", Role::User).await;
    let held = resolve(&t.state, &ada.access).await.expect("a valid token");
    assert_eq!(
        recheck(t.store.as_ref(), &held)
            .await
            .expect("still valid")
            .id,
        ada.id
    );

    let (status, body) = t
        .post(
            "/api/me/password",
            Some(&ada.access),
            &json!({"current_password": PASSWORD, "new_password": "another password"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = recheck(t.store.as_ref(), &held).await;
    assert!(is_unauthorized(&r, "password"), "{r:?}");

    let fresh = body["access_token"].as_str().expect("a token").to_owned();
    let held = resolve(&t.state, &fresh).await.expect("the new token");
    let (status, body) = t
        .patch(
            &format!("/api/users/{}", ada.id),
            Some(&tech.access),
            &json!({"disabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = recheck(t.store.as_ref(), &held).await;
    assert!(matches!(r, Err(AppError::AccountDisabled)), "{r:?}");
    // Enabled again, the token stays dead.
    let (status, body) = t
        .patch(
            &format!("/api/users/{}", ada.id),
            Some(&tech.access),
            &json!({"disabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = recheck(t.store.as_ref(), &held).await;
    assert!(is_unauthorized(&r, "password"), "{r:?}");
    let (status, body) = t.get("/api/me", Some(&fresh)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_held_api_key_ends_when_it_is_revoked() {
    let t = TestApp::new().await;
    let ada = t.signed_in("ada", Role::User).await;
    let (status, created) = t
        .post("/api/me/keys", Some(&ada.access), &json!({"name": "ws"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().expect("a key");
    let held = resolve(&t.state, key).await.expect("a valid key");
    assert!(recheck(t.store.as_ref(), &held).await.is_ok());
    let id = created["id"].as_str().expect("an id");
    let (status, _) = t
        .delete(&format!("/api/me/keys/{id}"), Some(&ada.access))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let r = recheck(t.store.as_ref(), &held).await;
    assert!(is_unauthorized(&r, "API key"), "{r:?}");
}

#[tokio::test]
async fn an_admin_acts_on_users_and_admins_but_not_on_technicians() {
    let t = TestApp::new().await;
    let admin = t.signed_in("admin", Role::Admin).await;
    let tech = t.create("tech", Role::Technician).await;
    let other = t.create("other", Role::Admin).await;
    let reset = json!({"new_password": "taken over!"});
    let (status, body) = t
        .post(
            &format!("/api/users/{}/password", tech.id),
            Some(&admin.access),
            &reset,
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = t
        .patch(
            &format!("/api/users/{}", tech.id),
            Some(&admin.access),
            &json!({"display_name": "mine now"}),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = t
        .post(
            &format!("/api/users/{}/password", other.id),
            Some(&admin.access),
            &reset,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

/// A refresh or sign-in reads the account, then stores a session; a reset
/// or disable landing in between must not leave that session working.
#[tokio::test]
async fn tokens_for_an_account_changed_meanwhile_are_refused() {
    let t = TestApp::new().await;
    let ada = t.insert_user("ada", Role::User).await;
    let reset = corral_host::store::UserUpdate {
        bump_token_version: true,
        ..Default::default()
    };
    t.store.update_user(&ada.id, &reset).await.expect("reset");
    let r = corral_host::api::auth::issue_tokens(&t.state, &ada, None).await;
    assert!(
        matches!(&r, Err(AppError::Unauthorized(m)) if m.contains("changed meanwhile")),
        "{:?}",
        r.as_ref().map(|tokens| &tokens.user.id)
    );

    let bob = t.insert_user("bob", Role::User).await;
    let disable = corral_host::store::UserUpdate {
        disabled: Some(true),
        ..Default::default()
    };
    t.store
        .update_user(&bob.id, &disable)
        .await
        .expect("disable");
    let r = corral_host::api::auth::issue_tokens(&t.state, &bob, None).await;
    assert!(
        matches!(r, Err(AppError::AccountDisabled)),
        "{:?}",
        r.as_ref().map(|tokens| &tokens.user.id)
    );

    // The account as it is now gets tokens.
    let current = t.store.get_user(&ada.id).await.expect("read").expect("ada");
    let tokens = corral_host::api::auth::issue_tokens(&t.state, &current, None)
        .await
        .expect("tokens for the current version");
    let (status, body) = t.get("/api/me", Some(&tokens.access_token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
