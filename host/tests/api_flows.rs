//! Behaviour people rely on, end to end through the HTTP application:
//! sessions, account administration, API keys, chats, tickets, statistics
//! and how bad input is answered.

#[path = "support.rs"]
mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use corral_host::config::Config;
use corral_host::model::Chat;
use corral_sdk::Role;
use serde_json::{json, Value};
use support::{account_from_tokens, assert_error, field_of_items, items, TestApp, PASSWORD};

/// Lets the clock move on, so records made one after the other get
/// distinct (millisecond) timestamps and a well-defined order.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

// ---------------------------------------------------------------- sessions

#[tokio::test]
async fn register_then_login_then_me() {
    let t = TestApp::new().await;
    let (status, body) = t
        .post(
            "/api/auth/register",
            None,
            &json!({"username": "Ada", "password": PASSWORD, "display_name": "Ada Lovelace"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["user"]["username"], "ada", "usernames are lowercased");
    assert_eq!(body["user"]["role"], "user");
    assert!(body["user"].get("password_hash").is_none(), "{body}");
    let registered = account_from_tokens(&body);

    // The registration's own token works.
    let (status, me) = t.get("/api/me", Some(&registered.access)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["display_name"], "Ada Lovelace");

    let login = t.login("ada", PASSWORD).await;
    let (status, me) = t.get("/api/me", Some(&login.access)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["id"], registered.id.as_str());
    assert_eq!(me["username"], "ada");
    assert!(me["last_login_at"].is_string(), "login is recorded: {me}");

    // The username is taken now, in any case.
    let (status, body) = t
        .post(
            "/api/auth/register",
            None,
            &json!({"username": "ADA", "password": PASSWORD}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn wrong_passwords_slow_the_account_down_but_never_lock_its_owner_out() {
    let t = TestApp::new().await;
    t.create("bob", Role::User).await;
    let wrong = json!({"username": "bob", "password": "not the password"});
    for attempt in 1..=6 {
        let (status, body) = t.post("/api/auth/login", None, &wrong).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}: {body}"
        );
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // Guessing wrong on purpose cannot keep the owner out.
    let (status, body) = t
        .post(
            "/api/auth/login",
            None,
            &json!({"username": "bob", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // An unknown username fails the same way as a wrong password.
    let (status, body) = t
        .post(
            "/api/auth/login",
            None,
            &json!({"username": "nobody", "password": PASSWORD}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let t = TestApp::new().await;
    let first = t.signed_in("carol", Role::User).await;

    let (status, body) = t
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refresh_token": first.refresh}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = account_from_tokens(&body);
    assert_ne!(second.refresh, first.refresh, "the refresh token rotates");
    let (status, _) = t.get("/api/me", Some(&second.access)).await;
    assert_eq!(status, StatusCode::OK);

    // The old token again: refused, and the newer one is revoked with it.
    let (status, body) = t
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refresh_token": first.refresh}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = t
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refresh_token": second.refresh}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    // Another sign-in of the same account is not affected.
    let other_login = t.login("carol", PASSWORD).await;
    let (status, _) = t
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refresh_token": other_login.refresh}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // A made-up token is refused.
    let (status, body) = t
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refresh_token": "crt_nonsense"}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let t = TestApp::new().await;
    let dave = t.signed_in("dave", Role::User).await;
    let r = t
        .call(
            Method::POST,
            "/api/auth/logout",
            None,
            Some(&json!({"refresh_token": dave.refresh})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    let (status, body) = t
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refresh_token": dave.refresh}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    // Signing out with an unknown token is not an error.
    let r = t
        .call(
            Method::POST,
            "/api/auth/logout",
            None,
            Some(&json!({"refresh_token": "crt_unknown"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

// ------------------------------------------------------ account administration

#[tokio::test]
async fn a_disabled_account_is_refused_on_the_next_request() {
    let t = TestApp::new().await;
    let admin = t.signed_in("admin", Role::Admin).await;
    let erin = t.signed_in("erin", Role::User).await;
    let (status, key) = t
        .post("/api/me/keys", Some(&erin.access), &json!({"name": "k"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let key = key["key"].as_str().expect("key").to_owned();

    let (status, body) = t
        .patch(
            &format!("/api/users/{}", erin.id),
            Some(&admin.access),
            &json!({"disabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["disabled"], true);

    let (status, body) = t.get("/api/me", Some(&erin.access)).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "account_disabled");
    // Disabling deletes the account's API keys.
    let (status, body) = t.get("/api/me", Some(&key)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = t
        .post(
            "/api/auth/login",
            None,
            &json!({"username": "erin", "password": PASSWORD}),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "account_disabled");
    let (status, body) = t
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refresh_token": erin.refresh}),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "account_disabled");

    // Enabled again: nothing issued before the disable comes back.
    let (status, _) = t
        .patch(
            &format!("/api/users/{}", erin.id),
            Some(&admin.access),
            &json!({"disabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for token in [&erin.access, &key] {
        let (status, body) = t.get("/api/me", Some(token)).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let (status, body) = t
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refresh_token": erin.refresh}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = t
        .post(
            "/api/auth/login",
            None,
            &json!({"username": "erin", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_role_change_takes_effect_at_once() {
    let t = TestApp::new().await;
    let boss = t.signed_in("boss", Role::Admin).await;
    let frank = t.signed_in("frank", Role::Admin).await;
    let (status, _) = t.get("/api/users", Some(&frank.access)).await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = t
        .patch(
            &format!("/api/users/{}", frank.id),
            Some(&boss.access),
            &json!({"role": "user"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = t.get("/api/users", Some(&frank.access)).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, me) = t.get("/api/me", Some(&frank.access)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["role"], "user");

    // And back.
    let (status, _) = t
        .patch(
            &format!("/api/users/{}", frank.id),
            Some(&boss.access),
            &json!({"role": "admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = t.get("/api/audit", Some(&frank.access)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_password_reset_by_staff_ends_every_session() {
    let t = TestApp::new().await;
    let admin = t.signed_in("admin", Role::Admin).await;
    let gina = t.signed_in("gina", Role::User).await;

    let (status, body) = t
        .post(
            &format!("/api/users/{}/password", gina.id),
            Some(&admin.access),
            &json!({"new_password": "short"}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(body["details"][0]["field"], "new_password");

    let r = t
        .call(
            Method::POST,
            &format!("/api/users/{}/password", gina.id),
            Some(&admin.access),
            Some(&json!({"new_password": "a new password"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());

    let (status, body) = t.get("/api/me", Some(&gina.access)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = t
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refresh_token": gina.refresh}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, _) = t
        .post(
            "/api/auth/login",
            None,
            &json!({"username": "gina", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let again = t.login("gina", "a new password").await;
    let (status, _) = t.get("/api/me", Some(&again.access)).await;
    assert_eq!(status, StatusCode::OK);

    let (status, audit) = t
        .get("/api/audit?action=user.password_reset", Some(&admin.access))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(audit["total"], 1, "{audit}");
    assert_eq!(items(&audit)[0]["target"], gina.id.as_str());
}

#[tokio::test]
async fn changing_the_own_password_returns_working_tokens() {
    let t = TestApp::new().await;
    let hal = t.signed_in("hal", Role::User).await;
    let second_login = t.login("hal", PASSWORD).await;

    let wrong_guess = || async {
        let (status, body) = t
            .post(
                "/api/me/password",
                Some(&hal.access),
                &json!({"current_password": "wrong guess", "new_password": "a new password"}),
            )
            .await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert_eq!(body["details"][0]["field"], "current_password");
    };
    wrong_guess().await;
    // That failure changed nothing.
    let (status, _) = t.get("/api/me", Some(&hal.access)).await;
    assert_eq!(status, StatusCode::OK);
    // Wrong guesses count against the account as wrong sign-ins do: the
    // next check of its password waits its turn.
    for _ in 0..corral_host::ratelimit::FREE_FAILURES {
        wrong_guess().await;
    }
    let turn = t.state.limiter.reserve("hal");
    assert!(turn.is_ok_and(|wait| !wait.is_zero()), "{turn:?}");
    t.state.limiter.succeeded("hal");
    // A key cannot change the password (the answer is a sign-in).
    let (status, made) = t
        .post("/api/me/keys", Some(&hal.access), &json!({"name": "cli"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let (status, body) = t
        .post(
            "/api/me/password",
            made["key"].as_str(),
            &json!({"current_password": PASSWORD, "new_password": "a new password"}),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");

    let (status, body) = t
        .post(
            "/api/me/password",
            Some(&hal.access),
            &json!({"current_password": PASSWORD, "new_password": "a new password"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fresh = account_from_tokens(&body);

    let (status, _) = t.get("/api/me", Some(&fresh.access)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = t
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refresh_token": fresh.refresh}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    for old in [&hal, &second_login] {
        let (status, body) = t.get("/api/me", Some(&old.access)).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        let (status, body) = t
            .post(
                "/api/auth/refresh",
                None,
                &json!({"refresh_token": old.refresh}),
            )
            .await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    t.login("hal", "a new password").await;
}

#[tokio::test]
async fn api_keys_are_shown_once_work_and_stop_when_deleted() {
    let t = TestApp::new().await;
    let ivy = t.signed_in("ivy", Role::User).await;

    let (status, created) = t
        .post(
            "/api/me/keys",
            Some(&ivy.access),
            &json!({"name": "laptop", "expires_in_days": 30}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().expect("the key").to_owned();
    assert!(key.starts_with("crl_"), "{key}");
    assert_eq!(created["prefix"].as_str(), Some(&key[..12]));
    assert!(created["last_used_at"].is_null());
    assert!(created["expires_at"].is_string());
    let key_id = id(&created);

    let (status, list) = t.get("/api/me/keys", Some(&ivy.access)).await;
    assert_eq!(status, StatusCode::OK);
    let listed = list.as_array().expect("a list");
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].get("key").is_none(),
        "the key is shown only once: {list}"
    );
    assert!(
        !list.to_string().contains(&key),
        "the key is not listed: {list}"
    );

    let (status, me) = t.get("/api/me", Some(&key)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "ivy");

    let (status, list) = t.get("/api/me/keys", Some(&ivy.access)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        list[0]["last_used_at"].is_string(),
        "use is recorded: {list}"
    );

    let (status, body) = t
        .post("/api/me/keys", Some(&ivy.access), &json!({"name": "  "}))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    let (status, _) = t
        .delete(&format!("/api/me/keys/{key_id}"), Some(&ivy.access))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = t.get("/api/me", Some(&key)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = t
        .delete(&format!("/api/me/keys/{key_id}"), Some(&ivy.access))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_key_cannot_make_keys_or_revoke_others() {
    let t = TestApp::new().await;
    let ivy = t.signed_in("ivy", Role::User).await;
    let make = |auth: String, body: serde_json::Value| {
        let t = &t;
        async move { t.post("/api/me/keys", Some(&auth), &body).await }
    };
    let mut keys = Vec::new();
    for body in [
        json!({"name": "short", "expires_in_days": 2}),
        json!({"name": "forever"}),
    ] {
        let (status, made) = make(ivy.access.clone(), body).await;
        assert_eq!(status, StatusCode::CREATED, "{made}");
        keys.push((
            made["key"].as_str().expect("the key").to_owned(),
            made["id"].as_str().expect("its id").to_owned(),
        ));
    }
    let (short, forever) = (&keys[0], &keys[1]);

    // Whatever the key and whatever it asks for: a stolen key cannot make
    // another that would outlive its revocation.
    for (key, _) in &keys {
        for body in [
            json!({"name": "forever"}),
            json!({"name": "sooner", "expires_in_days": 1}),
        ] {
            let (status, refused) = make(key.clone(), body).await;
            assert_error(status, &refused, StatusCode::FORBIDDEN, "forbidden");
            assert!(
                refused["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("from a sign-in")),
                "{refused}"
            );
        }
    }
    // Nor revoke the owner's other keys; only itself.
    let (status, refused) = t
        .delete(&format!("/api/me/keys/{}", forever.1), Some(&short.0))
        .await;
    assert_error(status, &refused, StatusCode::FORBIDDEN, "forbidden");
    let (status, _) = t
        .delete(&format!("/api/me/keys/{}", short.1), Some(&short.0))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = t.get("/api/me", Some(&short.0)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a revoked key still works"
    );

    let (_, list) = t.get("/api/me/keys", Some(&ivy.access)).await;
    let names: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["forever"], "{list}");
}

/// A staff member's key runs scripts, but what would outlive its
/// revocation (a staff account, a role, a password it knows) needs a
/// sign-in.
#[tokio::test]
async fn a_staff_key_cannot_leave_access_behind() {
    let t = TestApp::new().await;
    let boss = t.signed_in("boss", Role::Admin).await;
    let (status, made) = t
        .post(
            "/api/me/keys",
            Some(&boss.access),
            &json!({"name": "script"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let key = made["key"].as_str().expect("the key").to_owned();
    let key = Some(key.as_str());

    let (status, body) = t
        .post(
            "/api/users",
            key,
            &json!({"username": "backdoor", "password": PASSWORD, "role": "admin"}),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("needs a sign-in")),
        "{body}"
    );
    // An ordinary account, yes.
    let (status, plain) = t
        .post(
            "/api/users",
            key,
            &json!({"username": "newbie", "password": PASSWORD, "role": "user"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    let newbie = format!("/api/users/{}", id(&plain));
    let (status, body) = t.patch(&newbie, key, &json!({"role": "admin"})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = t
        .post(
            &format!("{newbie}/password"),
            key,
            &json!({"new_password": "known to the thief"}),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = t
        .patch(&newbie, key, &json!({"display_name": "Newbie"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Disabling, yes; enabling again brings back whatever password is
    // known for the account, so it needs a sign-in. Saying an enabled
    // account stays enabled changes nothing and passes.
    let (status, body) = t.patch(&newbie, key, &json!({"disabled": false})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = t.patch(&newbie, key, &json!({"disabled": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = t.patch(&newbie, key, &json!({"disabled": false})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (_, seen) = t.get(&newbie, Some(&boss.access)).await;
    assert_eq!(seen["disabled"], true);
    let (status, body) = t
        .patch(&newbie, Some(&boss.access), &json!({"disabled": false}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, seen) = t.get(&newbie, Some(&boss.access)).await;
    assert_eq!(seen["role"], "user");
    assert!(t
        .store
        .get_user_by_username("backdoor")
        .await
        .expect("store")
        .is_none());
}

#[tokio::test]
async fn closed_registration_is_refused_and_audited() {
    let t = TestApp::new().await;
    let admin = t.signed_in("admin", Role::Admin).await;
    let newcomer = json!({"username": "newcomer", "password": PASSWORD});

    let (status, body) = t
        .patch(
            "/api/settings",
            Some(&admin.access),
            &json!({"registration_open": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["registration_open"], false);
    let (_, body) = t.get("/api/settings", Some(&admin.access)).await;
    assert_eq!(body["registration_open"], false);

    let (status, body) = t.post("/api/auth/register", None, &newcomer).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert!(t
        .store
        .get_user_by_username("newcomer")
        .await
        .unwrap()
        .is_none());

    let (status, audit) = t
        .get("/api/audit?action=settings.update", Some(&admin.access))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(audit["total"], 1, "{audit}");
    let entry = &items(&audit)[0];
    assert_eq!(entry["actor_id"], admin.id.as_str());
    assert_eq!(entry["target"], "registration_open");
    assert_eq!(entry["details"]["to"], false);

    // Staff can still create accounts; reopening lets people register.
    let (status, _) = t
        .post(
            "/api/users",
            Some(&admin.access),
            &json!({"username": "invited", "password": PASSWORD, "role": "user"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = t
        .patch(
            "/api/settings",
            Some(&admin.access),
            &json!({"registration_open": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = t.post("/api/auth/register", None, &newcomer).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn the_last_active_admin_stays() {
    let t = TestApp::new().await;
    let only = t.signed_in("only", Role::Admin).await;
    let me = format!("/api/users/{}", only.id);

    for change in [json!({"disabled": true}), json!({"role": "user"})] {
        let (status, body) = t.patch(&me, Some(&only.access), &change).await;
        assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    }
    let (_, body) = t.get(&me, Some(&only.access)).await;
    assert_eq!(
        (body["role"].clone(), body["disabled"].clone()),
        (json!("admin"), json!(false))
    );

    let (status, second) = t
        .post(
            "/api/users",
            Some(&only.access),
            &json!({"username": "second", "password": PASSWORD, "role": "admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");

    let (status, body) = t
        .patch(&me, Some(&only.access), &json!({"role": "user"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "user");

    // Now `second` is the last one.
    let second_login = t.login("second", PASSWORD).await;
    let (status, body) = t
        .patch(
            &format!("/api/users/{}", id(&second)),
            Some(&second_login.access),
            &json!({"disabled": true}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
}

/// Only a technician can make a technician, so the last one stays one,
/// even while admins remain to keep the platform staffed.
#[tokio::test]
async fn the_last_active_technician_stays() {
    let t = TestApp::new().await;
    let _admin = t.signed_in("admin", Role::Admin).await;
    let tech = t.signed_in("tech", Role::Technician).await;
    let me = format!("/api/users/{}", tech.id);

    for change in [json!({"role": "admin"}), json!({"disabled": true})] {
        let (status, body) = t.patch(&me, Some(&tech.access), &change).await;
        assert_error(status, &body, StatusCode::CONFLICT, "conflict");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("last active technician")),
            "{body}"
        );
    }
    let (_, body) = t.get(&me, Some(&tech.access)).await;
    assert_eq!(
        (body["role"].clone(), body["disabled"].clone()),
        (json!("technician"), json!(false))
    );

    // With a second technician, either may step down.
    let (status, second) = t
        .post(
            "/api/users",
            Some(&tech.access),
            &json!({"username": "second", "password": PASSWORD, "role": "technician"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let (status, body) = t
        .patch(&me, Some(&tech.access), &json!({"role": "admin"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "admin");
}

/// Staff reset other accounts' passwords; their own goes through
/// `/api/me/password`, which asks for the current one, so a stolen access
/// token or key cannot lock the owner out.
#[tokio::test]
async fn staff_cannot_reset_their_own_password_without_the_current_one() {
    let t = TestApp::new().await;
    for (name, role) in [("ada", Role::Admin), ("tess", Role::Technician)] {
        let staff = t.signed_in(name, role).await;
        let (status, body) = t
            .post(
                &format!("/api/users/{}/password", staff.id),
                Some(&staff.access),
                &json!({"new_password": "taken over for good"}),
            )
            .await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("/api/me/password")),
            "{body}"
        );
        // Nothing changed: the session and the password still work.
        let (status, _) = t.get("/api/me", Some(&staff.access)).await;
        assert_eq!(status, StatusCode::OK, "{name}'s session ended");
        t.login(name, PASSWORD).await;
    }
}

#[tokio::test]
async fn the_audit_log_lists_user_changes_newest_first() {
    let t = TestApp::new().await;
    let admin = t.signed_in("admin", Role::Admin).await;
    let (status, created) = t
        .post(
            "/api/users",
            Some(&admin.access),
            &json!({"username": "jack", "password": PASSWORD, "role": "user"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let jack = id(&created);
    tick().await;
    let (status, _) = t
        .patch(
            &format!("/api/users/{jack}"),
            Some(&admin.access),
            &json!({"role": "admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    tick().await;
    let (status, _) = t
        .patch(
            &format!("/api/users/{jack}"),
            Some(&admin.access),
            &json!({"disabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, audit) = t.get("/api/audit", Some(&admin.access)).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    assert_eq!(
        field_of_items(&audit, "action"),
        vec![
            json!("user.disable"),
            json!("user.role"),
            json!("user.create")
        ],
        "{audit}"
    );
    for entry in items(&audit) {
        assert_eq!(entry["target"], jack.as_str());
        assert_eq!(entry["actor_username"], "admin");
    }
    let role = &items(&audit)[1]["details"];
    assert_eq!(
        (role["from"].clone(), role["to"].clone()),
        (json!("user"), json!("admin"))
    );

    let (_, filtered) = t
        .get("/api/audit?action=user.role", Some(&admin.access))
        .await;
    assert_eq!(filtered["total"], 1);
    let (_, page) = t
        .get("/api/audit?limit=1&offset=1", Some(&admin.access))
        .await;
    assert_eq!(page["total"], 3);
    assert_eq!(field_of_items(&page, "action"), vec![json!("user.role")]);
    let (_, by_nobody) = t.get("/api/audit?actor=nobody", Some(&admin.access)).await;
    assert_eq!(by_nobody["total"], 0);
}

// ------------------------------------------------------------------- chats

#[tokio::test]
async fn chats_list_search_rename_pin_export_and_delete() {
    let t = TestApp::new().await;
    let kim = t.signed_in("kim", Role::User).await;
    let token = Some(kim.access.as_str());

    let a = id(&t.chat(&kim.access, "Alpha plans").await);
    tick().await;
    let b = id(&t.chat(&kim.access, "Groceries").await);
    tick().await;
    let c = id(&t.chat(&kim.access, "Gamma notes").await);

    let (status, list) = t.get("/api/chats", token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 3);
    assert_eq!(
        field_of_items(&list, "id"),
        vec![json!(c), json!(b), json!(a)],
        "newest first"
    );

    tick().await;
    let (status, pinned) = t
        .patch(&format!("/api/chats/{a}"), token, &json!({"pinned": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{pinned}");
    assert_eq!(pinned["pinned"], true);
    tick().await;
    let (status, message) = t
        .post(
            &format!("/api/chats/{b}/messages"),
            token,
            &json!({"content": "Remember the Zebra crossing"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{message}");
    assert_eq!(message["role"], "user");

    let (_, list) = t.get("/api/chats", token).await;
    assert_eq!(
        field_of_items(&list, "id"),
        vec![json!(a), json!(b), json!(c)],
        "pinned first, then most recently active"
    );
    let (_, only_pinned) = t.get("/api/chats?pinned=true", token).await;
    assert_eq!(field_of_items(&only_pinned, "id"), vec![json!(a)]);

    // Search: title and message text, any case.
    let (_, found) = t.get("/api/chats?q=GROCER", token).await;
    assert_eq!(field_of_items(&found, "id"), vec![json!(b)]);
    let (_, found) = t.get("/api/chats?q=zebra", token).await;
    assert_eq!(field_of_items(&found, "id"), vec![json!(b)], "{found}");
    let (_, found) = t.get("/api/chats?q=nothing-like-this", token).await;
    assert_eq!(found["total"], 0);
    // Wildcards of the store's query language are taken literally.
    let percent = id(&t.chat(&kim.access, "100% sure").await);
    for q in ["%25", "_", "%5C"] {
        let (_, found) = t.get(&format!("/api/chats?q={q}"), token).await;
        let want = if q == "%25" {
            vec![json!(percent)]
        } else {
            vec![]
        };
        assert_eq!(field_of_items(&found, "id"), want, "q={q}");
    }
    let (status, _) = t.delete(&format!("/api/chats/{percent}"), token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Rename.
    let (status, renamed) = t
        .patch(
            &format!("/api/chats/{c}"),
            token,
            &json!({"title": "  Gamma, renamed "}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(renamed["title"], "Gamma, renamed");
    let (_, got) = t.get(&format!("/api/chats/{c}"), token).await;
    assert_eq!(got["title"], "Gamma, renamed");
    let (status, body) = t
        .patch(&format!("/api/chats/{c}"), token, &json!({"title": ""}))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    // Read with messages.
    let (status, got) = t.get(&format!("/api/chats/{b}"), token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["title"], "Groceries");
    assert_eq!(got["messages"][0]["content"], "Remember the Zebra crossing");

    // Export as JSON and as Markdown.
    let r = t
        .call(Method::GET, &format!("/api/chats/{b}/export"), token, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header(header::CONTENT_TYPE).as_deref(),
        Some("application/json")
    );
    let disposition = r.header(header::CONTENT_DISPOSITION).expect("a file name");
    assert!(
        disposition.contains("attachment") && disposition.contains("Groceries.json"),
        "{disposition}"
    );
    let exported = r.json();
    assert_eq!(exported["id"], b.as_str());
    assert_eq!(
        exported["messages"][0]["content"],
        "Remember the Zebra crossing"
    );

    let r = t
        .call(
            Method::GET,
            &format!("/api/chats/{b}/export?format=markdown"),
            token,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let content_type = r.header(header::CONTENT_TYPE).expect("a content type");
    assert!(content_type.starts_with("text/markdown"), "{content_type}");
    let text = r.text();
    assert!(text.starts_with("# Groceries\n"), "{text}");
    assert!(
        text.contains("## User") && text.contains("Remember the Zebra crossing"),
        "{text}"
    );

    let (status, body) = t
        .get(&format!("/api/chats/{b}/export?format=pdf"), token)
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");

    // Delete.
    let (status, _) = t.delete(&format!("/api/chats/{b}"), token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = t.get(&format!("/api/chats/{b}"), token).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, _) = t.delete(&format!("/api/chats/{b}"), token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = t.get("/api/chats", token).await;
    assert_eq!(field_of_items(&list, "id"), vec![json!(a), json!(c)]);
    let (_, found) = t.get("/api/chats?q=zebra", token).await;
    assert_eq!(
        found["total"], 0,
        "the deleted chat's messages are gone from search"
    );
}

#[tokio::test]
async fn a_new_chat_is_named_after_its_first_message() {
    let t = TestApp::new().await;
    let lee = t.signed_in("lee", Role::User).await;
    let (status, chat) = t
        .post(
            "/api/chats",
            Some(&lee.access),
            &json!({"model": "gemma-3-270m"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(chat["title"], "New chat");
    let chat = id(&chat);
    let (status, _) = t
        .post(
            &format!("/api/chats/{chat}/messages"),
            Some(&lee.access),
            &json!({"content": "\nHow do foxes hunt?\nMore text"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, got) = t
        .get(&format!("/api/chats/{chat}"), Some(&lee.access))
        .await;
    assert_eq!(got["title"], "How do foxes hunt?");
    let (status, body) = t
        .post(
            &format!("/api/chats/{chat}/messages"),
            Some(&lee.access),
            &json!({"content": "  "}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(body["details"][0]["field"], "content");
}

#[tokio::test]
async fn temporary_chats_expire_and_vanish() {
    let t = TestApp::new().await;
    let max = t.signed_in("max", Role::User).await;
    let token = Some(max.access.as_str());

    let (status, chat) = t
        .post(
            "/api/chats",
            token,
            &json!({"model": "m", "temporary": true, "ttl_seconds": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    assert_eq!(chat["temporary"], true);
    let created = corral_host::time::parse(chat["created_at"].as_str().unwrap()).unwrap();
    let expires =
        corral_host::time::parse(chat["expires_at"].as_str().expect("expires_at")).unwrap();
    assert_eq!((expires - created).num_seconds(), 60);

    let (_, default_ttl) = t
        .post(
            "/api/chats",
            token,
            &json!({"model": "m", "temporary": true}),
        )
        .await;
    let created = corral_host::time::parse(default_ttl["created_at"].as_str().unwrap()).unwrap();
    let expires = corral_host::time::parse(default_ttl["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_hours(), 24);
    let (_, normal) = t.post("/api/chats", token, &json!({"model": "m"})).await;
    assert!(normal["expires_at"].is_null());

    for bad in [
        json!({"model": "m", "temporary": true, "ttl_seconds": 59}),
        json!({"model": "m", "ttl_seconds": 3600}),
    ] {
        let (status, body) = t.post("/api/chats", token, &bad).await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert_eq!(body["details"][0]["field"], "ttl_seconds");
    }

    // A temporary chat whose time is up, as the store holds it until the
    // sweeper runs: invisible everywhere.
    let now = corral_host::time::now();
    let expired = Chat {
        id: corral_host::model::new_id(),
        owner_id: max.id.clone(),
        title: "Expired secret".into(),
        model: "m".into(),
        system_prompt: None,
        pinned: true,
        temporary: true,
        created_at: now - chrono::Duration::seconds(120),
        updated_at: now - chrono::Duration::seconds(120),
        expires_at: Some(now - chrono::Duration::seconds(1)),
        sampling: Default::default(),
    };
    t.store
        .create_chat(&expired)
        .await
        .expect("storing the chat");
    let path = format!("/api/chats/{}", expired.id);
    let (status, body) = t.get(&path, token).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, _) = t.get(&format!("{path}/export"), token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = t
        .post(
            &format!("{path}/messages"),
            token,
            &json!({"content": "hi"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = t.patch(&path, token, &json!({"title": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = t.get("/api/chats", token).await;
    assert_eq!(list["total"], 3, "{list}");
    assert!(!list.to_string().contains("Expired secret"));
    let (_, found) = t.get("/api/chats?q=secret", token).await;
    assert_eq!(found["total"], 0);
}

// ----------------------------------------------------------------- tickets

#[tokio::test]
async fn ticket_life_cycle() {
    let t = TestApp::new().await;
    let admin = t.signed_in("admin", Role::Admin).await;
    let tech = t.signed_in("tech", Role::Technician).await;
    let nina = t.signed_in("nina", Role::User).await;
    let omar = t.signed_in("omar", Role::User).await;
    let staff = Some(admin.access.as_str());
    let owner = Some(nina.access.as_str());

    let t1 = t
        .ticket(&nina.access, "Answers stop mid-sentence", "bug")
        .await;
    tick().await;
    let t2 = t.ticket(&nina.access, "How do I export?", "question").await;
    tick().await;
    let t3 = t.ticket(&omar.access, "Cannot sign in", "account").await;
    assert_eq!(
        (
            t1["number"].clone(),
            t2["number"].clone(),
            t3["number"].clone()
        ),
        (json!(1), json!(2), json!(3))
    );
    assert_eq!(
        (t1["status"].clone(), t1["priority"].clone()),
        (json!("open"), json!("normal"))
    );
    let t1_id = id(&t1);
    let t1_path = format!("/api/tickets/{t1_id}");

    // Owners see their own; staff see all.
    let (_, mine) = t.get("/api/tickets", owner).await;
    assert_eq!(
        field_of_items(&mine, "number"),
        vec![json!(2), json!(1)],
        "newest first"
    );
    let (status, _) = t.get(&format!("/api/tickets/{}", id(&t3)), owner).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, all) = t.get("/api/tickets", staff).await;
    assert_eq!(all["total"], 3);

    // Staff filters.
    let numbers = |body: &Value| field_of_items(body, "number");
    let (_, open) = t.get("/api/tickets?status=open", staff).await;
    assert_eq!(open["total"], 3);
    let (_, bugs) = t.get("/api/tickets?category=bug", staff).await;
    assert_eq!(numbers(&bugs), vec![json!(1)]);
    let (_, unassigned) = t.get("/api/tickets?assignee=none", staff).await;
    assert_eq!(unassigned["total"], 3);
    let (_, found) = t.get("/api/tickets?q=SIGN%20IN", staff).await;
    assert_eq!(numbers(&found), vec![json!(3)]);
    let (status, body) = t.get("/api/tickets?status=sleeping", staff).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");

    // Assign to oneself, then filter by "me".
    let (status, assigned) = t
        .patch(&t1_path, staff, &json!({"assignee_id": admin.id}))
        .await;
    assert_eq!(status, StatusCode::OK, "{assigned}");
    assert_eq!(assigned["assignee_username"], "admin");
    let (_, mine_to_do) = t.get("/api/tickets?assignee=me", staff).await;
    assert_eq!(numbers(&mine_to_do), vec![json!(1)]);
    let (_, techs) = t.get("/api/tickets?assignee=me", Some(&tech.access)).await;
    assert_eq!(techs["total"], 0);
    let (_, unassigned) = t.get("/api/tickets?assignee=none", staff).await;
    assert_eq!(numbers(&unassigned), vec![json!(3), json!(2)]);
    let (status, body) = t
        .patch(&t1_path, staff, &json!({"assignee_id": nina.id}))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    // A public reply and an internal note.
    let (status, reply) = t
        .post(
            &format!("{t1_path}/comments"),
            staff,
            &json!({"body": "Which model?"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["author_is_staff"], true);
    tick().await;
    let (status, _) = t
        .post(
            &format!("{t1_path}/comments"),
            Some(&tech.access),
            &json!({"body": "Looks like the backend crash", "internal": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = t
        .post(
            &format!("{t1_path}/comments"),
            owner,
            &json!({"body": "sneaky", "internal": true}),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");

    let (_, seen_by_owner) = t.get(&t1_path, owner).await;
    assert_eq!(
        field_of_items(&json!({"items": seen_by_owner["comments"]}), "body"),
        vec![json!("Which model?")]
    );
    assert!(!seen_by_owner.to_string().contains("backend crash"));
    let (_, seen_by_staff) = t.get(&t1_path, staff).await;
    assert_eq!(seen_by_staff["comments"].as_array().map(Vec::len), Some(2));

    // The owner may not move the status forward or change staff fields.
    for change in [
        json!({"status": "in_progress"}),
        json!({"priority": "urgent"}),
    ] {
        let (status, body) = t.patch(&t1_path, owner, &change).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }

    // open → in_progress → resolved.
    let (status, body) = t
        .patch(&t1_path, staff, &json!({"status": "in_progress"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "in_progress");
    let (status, body) = t
        .patch(&t1_path, staff, &json!({"status": "resolved"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["resolved_at"].is_string());

    // The owner cannot set in_progress, but can reopen.
    let (status, body) = t
        .patch(&t1_path, owner, &json!({"status": "in_progress"}))
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = t.patch(&t1_path, owner, &json!({"status": "open"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "open");
    assert!(body["resolved_at"].is_null());

    // Resolved again, a reply from the owner reopens it too.
    t.patch(&t1_path, staff, &json!({"status": "resolved"}))
        .await;
    let (status, _) = t
        .post(
            &format!("{t1_path}/comments"),
            owner,
            &json!({"body": "Still broken"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, body) = t.get(&t1_path, owner).await;
    assert_eq!(body["status"], "open");

    // Closed is final: no comments, no status change.
    let (status, body) = t.patch(&t1_path, staff, &json!({"status": "closed"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for who in [owner, staff] {
        let (status, body) = t
            .post(
                &format!("{t1_path}/comments"),
                who,
                &json!({"body": "hello?"}),
            )
            .await;
        assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    }
    let (status, body) = t.patch(&t1_path, staff, &json!({"status": "open"})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");

    // By number, with or without `#`.
    for key in ["1", "%231"] {
        let (status, body) = t.get(&format!("/api/tickets/{key}"), owner).await;
        assert_eq!(status, StatusCode::OK, "{key}: {body}");
        assert_eq!(body["id"], t1_id.as_str());
    }
    let (status, _) = t.get("/api/tickets/3", owner).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "someone else's number");
    let (status, body) = t.get("/api/tickets/3", staff).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["owner_username"], "omar");

    let (_, closed) = t.get("/api/tickets?status=closed", staff).await;
    assert_eq!(numbers(&closed), vec![json!(1)]);
}

#[tokio::test]
async fn a_ticket_may_only_name_the_owners_chat() {
    let t = TestApp::new().await;
    let pia = t.signed_in("pia", Role::User).await;
    let quinn = t.signed_in("quinn", Role::User).await;
    let chat = id(&t.chat(&quinn.access, "Quinn's").await);
    let (status, body) = t
        .post(
            "/api/tickets",
            Some(&pia.access),
            &json!({"subject": "About a chat", "body": "See it", "category": "model", "chat_id": chat}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(body["details"][0]["field"], "chat_id");
    let own = id(&t.chat(&pia.access, "Pia's").await);
    let (status, body) = t
        .post(
            "/api/tickets",
            Some(&pia.access),
            &json!({"subject": "About a chat", "body": "See it", "category": "model", "chat_id": own}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["chat_id"], own.as_str());
}

// ------------------------------------------------------------------- stats

/// Today's entry of a statistics answer.
fn today(stats: &Value) -> Value {
    let day = chrono::Utc::now().date_naive().to_string();
    stats["days"]
        .as_array()
        .and_then(|days| days.iter().find(|d| d["day"] == day.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("no entry for {day}: {stats}"))
}

#[tokio::test]
async fn statistics_count_todays_activity() {
    let t = TestApp::new().await;
    let admin = t.signed_in("admin", Role::Admin).await;
    let (status, body) = t
        .post(
            "/api/auth/register",
            None,
            &json!({"username": "rosa", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let rosa = account_from_tokens(&body);
    let sam = t.signed_in("sam", Role::User).await;

    let c1 = id(&t.chat(&rosa.access, "one").await);
    t.chat(&rosa.access, "two").await;
    t.chat(&sam.access, "three").await;
    for text in ["a", "b", "c"] {
        let (status, _) = t
            .post(
                &format!("/api/chats/{c1}/messages"),
                Some(&rosa.access),
                &json!({"content": text}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let ticket = id(&t.ticket(&rosa.access, "Stats ticket", "other").await);
    t.ticket(&rosa.access, "Another one", "other").await;
    let (status, _) = t
        .patch(
            &format!("/api/tickets/{ticket}"),
            Some(&admin.access),
            &json!({"status": "resolved"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, stats) = t.get("/api/stats", Some(&admin.access)).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(
        stats["days"].as_array().map(Vec::len),
        Some(30),
        "30 days by default"
    );
    let day = today(&stats);
    let expected = json!({
        "day": day["day"],
        // Every account made today counts: admin and sam (made by
        // `create_account`) and rosa (registered).
        "new_users": 3,
        "active_users": 3,
        "chats": 3,
        "messages": 3,
        "tickets_opened": 2,
        "tickets_resolved": 1,
    });
    assert_eq!(day, expected);
    assert_eq!(
        stats["totals"],
        json!({"new_users": 3, "chats": 3, "messages": 3, "tickets_opened": 2, "tickets_resolved": 1})
    );
    assert_eq!(stats["users_total"], 3);

    let (status, mine) = t.get("/api/me/stats", Some(&rosa.access)).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(
        (
            mine["chats"].clone(),
            mine["messages"].clone(),
            mine["tickets_opened"].clone()
        ),
        (json!(2), json!(3), json!(2))
    );
    assert_eq!(today(&mine)["chats"], 2);
    let (_, sams) = t.get("/api/me/stats", Some(&sam.access)).await;
    assert_eq!(
        (
            sams["chats"].clone(),
            sams["messages"].clone(),
            sams["tickets_opened"].clone()
        ),
        (json!(1), json!(0), json!(0))
    );

    // Ranges.
    let (status, one_day) = t
        .get(
            "/api/stats?from=2026-01-01&to=2026-01-01",
            Some(&admin.access),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one_day["days"].as_array().map(Vec::len), Some(1));
    for bad in [
        "from=2026-02-01&to=2026-01-01",
        "from=2020-01-01&to=2026-01-01",
    ] {
        let (status, body) = t
            .get(&format!("/api/stats?{bad}"), Some(&admin.access))
            .await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }
    let (status, body) = t
        .get("/api/me/stats?from=yesterday", Some(&sam.access))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
}

// --------------------------------------------------------------- bad input

/// A POST with a raw body and an optional content type.
fn raw_post(
    path: &str,
    token: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(body.into()).expect("valid request")
}

/// The one chat of the fixture is still there, unchanged.
async fn assert_intact(t: &TestApp, token: &str, chat: &str) {
    let (status, list) = t.get("/api/chats", Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(field_of_items(&list, "id"), vec![json!(chat)], "{list}");
    assert_eq!(items(&list)[0]["title"], "Keep me");
    let (status, got) = t.get(&format!("/api/chats/{chat}"), Some(token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["messages"].as_array().map(Vec::len), Some(1), "{got}");
}

async fn bad_input_fixture(t: &TestApp) -> (String, String) {
    let user = t.signed_in("tess", Role::User).await;
    let chat = id(&t.chat(&user.access, "Keep me").await);
    let (status, _) = t
        .post(
            &format!("/api/chats/{chat}/messages"),
            Some(&user.access),
            &json!({"content": "kept"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    (user.access, chat)
}

#[tokio::test]
async fn bad_bodies_get_json_errors_and_change_nothing() {
    let t = TestApp::new().await;
    let (token, chat) = bad_input_fixture(&t).await;
    let messages = format!("/api/chats/{chat}/messages");

    let r = t
        .send(raw_post(
            "/api/chats",
            &token,
            Some("application/json"),
            "{not json",
        ))
        .await;
    assert_error(
        r.status,
        &r.json(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );
    let r = t
        .send(raw_post(
            &messages,
            &token,
            Some("application/json"),
            "{\"content\": ",
        ))
        .await;
    assert_error(
        r.status,
        &r.json(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );

    let (status, body) = t
        .post("/api/chats", Some(&token), &json!({"model": 5}))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(body["details"][0]["field"], "model", "{body}");
    let (status, body) = t
        .post(&messages, Some(&token), &json!({"content": ["x"]}))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(body["details"][0]["field"], "content", "{body}");
    let (status, body) = t.post("/api/chats", Some(&token), &json!({})).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (status, body) = t
        .post(
            "/api/chats",
            Some(&token),
            &json!({"model": "m", "owner_id": "someone"}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    let r = t
        .send(raw_post("/api/chats", &token, None, "{\"model\":\"m\"}"))
        .await;
    assert_error(
        r.status,
        &r.json(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let r = t
        .send(raw_post(
            &messages,
            &token,
            Some("text/plain"),
            "{\"content\":\"x\"}",
        ))
        .await;
    assert_error(
        r.status,
        &r.json(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    assert_intact(&t, &token, &chat).await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let t = TestApp::with_config(Config {
        max_body_bytes: 4096,
        ..Config::default()
    })
    .await;
    let (token, chat) = bad_input_fixture(&t).await;

    let big = "x".repeat(10 * 1024);
    let (status, body) = t
        .post(
            &format!("/api/chats/{chat}/messages"),
            Some(&token),
            &json!({"content": big}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let (status, body) = t
        .post(
            "/api/chats",
            Some(&token),
            &json!({"model": "m", "system_prompt": big}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    // Also when the client announces the length up front.
    let mut request = raw_post("/api/chats", &token, Some("application/json"), big.clone());
    request.headers_mut().insert(
        header::CONTENT_LENGTH,
        big.len().to_string().parse().expect("header"),
    );
    let r = t.send(request).await;
    assert_error(
        r.status,
        &r.json(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    // Just under the limit is fine.
    let (status, body) = t
        .post(
            &format!("/api/chats/{chat}/messages"),
            Some(&token),
            &json!({"content": "y".repeat(3000)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, got) = t.get(&format!("/api/chats/{chat}"), Some(&token)).await;
    assert_eq!(got["messages"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn unknown_routes_and_bad_queries_get_json_errors() {
    let t = TestApp::new().await;
    let (access, chat) = bad_input_fixture(&t).await;
    let token = Some(access.as_str());

    for path in ["/api/nope", "/v1/nothing/here", "/api/chats/x/y/z"] {
        let r = t.call(Method::GET, path, token, None).await;
        assert_error(r.status, &r.json(), StatusCode::NOT_FOUND, "not_found");
        let content_type = r.header(header::CONTENT_TYPE).unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{path}: {content_type}"
        );
    }
    let r = t.call(Method::GET, "/api/nope", None, None).await;
    assert_error(r.status, &r.json(), StatusCode::NOT_FOUND, "not_found");
    let r = t
        .call(Method::PUT, "/api/chats", token, Some(&json!({})))
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.json()["code"].is_string(), "{}", r.text());

    for (query, want, code) in [
        (
            "limit=0",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "limit=201",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        ("limit=-1", StatusCode::BAD_REQUEST, "bad_request"),
        ("limit=abc", StatusCode::BAD_REQUEST, "bad_request"),
        ("offset=abc", StatusCode::BAD_REQUEST, "bad_request"),
        (
            "offset=1000000001",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "offset=99999999999999999999999",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        ("pinned=maybe", StatusCode::BAD_REQUEST, "bad_request"),
    ] {
        for list in ["/api/chats", "/api/tickets"] {
            if query.starts_with("pinned") && list != "/api/chats" {
                continue;
            }
            let (status, body) = t.get(&format!("{list}?{query}"), token).await;
            assert_error(status, &body, want, code);
            if code == "validation_failed" {
                assert!(body["details"][0]["field"].is_string(), "{query}: {body}");
            }
        }
    }
    let (status, page) = t.get("/api/chats?limit=200&offset=1000000000", token).await;
    assert_eq!(status, StatusCode::OK, "the largest values are accepted");
    assert_eq!((page["total"].clone(), items(&page).len()), (json!(1), 0));

    assert_intact(&t, &access, &chat).await;
}

// ------------------------------------------- known host bugs (fail for now)

/// Two admins demoting each other at the same moment must not leave the
/// platform without an active admin. (Fails: `users::update` checks
/// `count_active_staff` and then writes, with nothing making the pair
/// atomic.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_demotions_never_leave_no_admin() {
    let t = TestApp::new().await;
    let demote = json!({"role": "user"});
    for round in 0..40 {
        let a = t.insert_user(&format!("a{round}"), Role::Admin).await;
        let b = t.insert_user(&format!("b{round}"), Role::Admin).await;
        let (ta, tb) = (t.issue(&a).await, t.issue(&b).await);
        let (path_a, path_b) = (
            format!("/api/users/{}", a.id),
            format!("/api/users/{}", b.id),
        );
        let (ra, rb) = tokio::join!(
            t.patch(&path_b, Some(&ta.access), &demote),
            t.patch(&path_a, Some(&tb.access), &demote),
        );
        let staff = t.store.count_active_staff().await.expect("store");
        assert!(
            staff >= 1,
            "round {round}: both demotions succeeded ({} and {}): no active admin is left",
            ra.0,
            rb.0
        );
        // Hand over to the next round's pair.
        for id in [&a.id, &b.id] {
            let demote = corral_host::store::UserUpdate {
                role: Some(Role::User),
                ..Default::default()
            };
            t.store.update_user(id, &demote).await.expect("store");
        }
    }
}

/// A password reset by staff is what one does for a compromised account:
/// "all its sessions and tokens stop working" (`users::reset_password`),
/// and `policy.rs` promises a reset takes effect "whatever tokens the user
/// still holds". (Fails: personal API keys keep working.)
#[tokio::test]
async fn a_password_reset_by_staff_also_stops_api_keys() {
    let t = TestApp::new().await;
    let admin = t.signed_in("admin", Role::Admin).await;
    let user = t.signed_in("uma", Role::User).await;
    let (status, key) = t
        .post("/api/me/keys", Some(&user.access), &json!({"name": "k"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let key = key["key"].as_str().expect("key").to_owned();
    let r = t
        .call(
            Method::POST,
            &format!("/api/users/{}/password", user.id),
            Some(&admin.access),
            Some(&json!({"new_password": "a new password"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let (status, body) = t.get("/api/me", Some(&key)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}

/// "Active users" are "accounts that signed in or did anything that day"
/// (`stats::PlatformDay`). A ticket opened on an earlier day and resolved
/// by staff today must not count its owner as active today. (Fails:
/// `tickets::update` records `ticket.resolved` under the owner's id.)
#[tokio::test]
async fn staff_resolving_a_ticket_does_not_make_its_owner_active() {
    let t = TestApp::new().await;
    let admin = t.signed_in("admin", Role::Admin).await;
    // An owner and a ticket from before today: no events of theirs today.
    let owner = t.insert_user("vic", Role::User).await;
    let earlier = corral_host::time::now() - chrono::Duration::days(3);
    let ticket = corral_host::model::Ticket {
        id: corral_host::model::new_id(),
        number: 0,
        owner_id: owner.id.clone(),
        owner_username: owner.username.clone(),
        subject: "Old problem".into(),
        body: "From three days ago".into(),
        category: corral_host::model::TicketCategory::Question,
        priority: corral_host::model::TicketPriority::Normal,
        status: corral_host::model::TicketStatus::Open,
        assignee_id: None,
        assignee_username: None,
        chat_id: None,
        created_at: earlier,
        updated_at: earlier,
        resolved_at: None,
    };
    let ticket = t.store.create_ticket(&ticket).await.expect("store");
    let (status, body) = t
        .patch(
            &format!("/api/tickets/{}", ticket.id),
            Some(&admin.access),
            &json!({"status": "resolved"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, stats) = t.get("/api/stats", Some(&admin.access)).await;
    let day = today(&stats);
    assert_eq!(day["tickets_resolved"], 1, "{day}");
    assert_eq!(
        day["active_users"], 1,
        "only the admin did anything today: {day}"
    );
}

/// Search is "a case-insensitive substring match" (`store.rs`), not only
/// for ASCII letters. (Fails on SQLite: `LIKE` folds ASCII only, so
/// `äpfel` does not find "Äpfel".)
#[tokio::test]
async fn chat_search_ignores_case_beyond_ascii() {
    let t = TestApp::new().await;
    let user = t.signed_in("wes", Role::User).await;
    let chat = id(&t.chat(&user.access, "Äpfel und Birnen").await);
    for q in ["%C3%84PFEL", "%C3%A4pfel", "birnen"] {
        let (_, found) = t
            .get(&format!("/api/chats?q={q}"), Some(&user.access))
            .await;
        assert_eq!(field_of_items(&found, "id"), vec![json!(chat)], "q={q}");
    }
}

#[tokio::test]
async fn only_technicians_grant_the_technician_role() {
    let t = TestApp::new().await;
    let admin = t.signed_in("admin", Role::Admin).await;
    let tech = t.signed_in("tech", Role::Technician).await;
    let (status, created) = t
        .post(
            "/api/users",
            Some(&admin.access),
            &json!({"username": "kim", "password": PASSWORD, "role": "user"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let kim = id(&created);
    for (path, body) in [
        (format!("/api/users/{kim}"), json!({"role": "technician"})),
        (
            format!("/api/users/{}", admin.id),
            json!({"role": "technician"}),
        ),
        (format!("/api/users/{}", tech.id), json!({"role": "user"})),
    ] {
        let (status, err) = t.patch(&path, Some(&admin.access), &body).await;
        assert_error(status, &err, StatusCode::FORBIDDEN, "forbidden");
    }
    let (status, err) = t
        .post(
            "/api/users",
            Some(&admin.access),
            &json!({"username": "lee", "password": PASSWORD, "role": "technician"}),
        )
        .await;
    assert_error(status, &err, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = t
        .patch(
            &format!("/api/users/{kim}"),
            Some(&tech.access),
            &json!({"role": "technician"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "technician");
}

#[tokio::test]
async fn the_openai_api_answers_errors_in_openai_shape() {
    let t = TestApp::new().await;
    let user = t.signed_in("oliver", Role::User).await;
    let r = t
        .send(raw_post(
            "/v1/chat/completions",
            &user.access,
            Some("application/json"),
            "{\"model\": ",
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let body = r.json();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["code"], "malformed_json", "{body}");

    let (status, body) = t
        .post(
            "/v1/chat/completions",
            Some(&user.access),
            &json!({"model": "no-such-model", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["type"], "not_found_error", "{body}");

    let (status, body) = t.get("/v1/models", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");

    let (status, body) = t.get("/v1/models", Some(&user.access)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["object"], "list");
}

/// Names others read (display names, chat titles, ticket subjects) cannot
/// hold characters that show nothing or turn the text around, so one name
/// cannot pass for another; a title made from a message drops them.
#[tokio::test]
async fn names_cannot_hide_characters() {
    let t = TestApp::new().await;
    let eve = t.signed_in("eve", Role::User).await;
    let token = Some(eve.access.as_str());
    for name in ["Support\u{200B}", "\u{202E}troppuS", "Sup\u{2066}port"] {
        let (status, body) = t
            .patch("/api/me", token, &json!({"display_name": name}))
            .await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert_eq!(body["details"][0]["field"], "display_name", "{body}");
        let (status, body) = t
            .post(
                "/api/tickets",
                token,
                &json!({"subject": name, "body": "Details.", "category": "question"}),
            )
            .await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert_eq!(body["details"][0]["field"], "subject", "{body}");
    }
    // What languages and emoji need stays: a Persian non-joiner, an emoji
    // sequence's joiner.
    for name in [
        "Ève Ștefănescu 中",
        "\u{062D}\u{0633}\u{0646}\u{200C}\u{0632}\u{0627}\u{062F}\u{0647}",
        "Ada \u{1F469}\u{200D}\u{1F4BB}",
    ] {
        let (status, body) = t
            .patch("/api/me", token, &json!({"display_name": name}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["display_name"], name);
    }

    t.missing_chat_model().await;
    let (status, body) = t
        .post(
            "/api/chats",
            token,
            &json!({"model": "gemma-3-270m", "title": "Plans\u{200D}"}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let chat = t.chat(&eve.access, corral_host::chat::UNTITLED).await;
    let id = chat["id"].as_str().unwrap();
    let _ = t
        .post(
            &format!("/api/chats/{id}/messages"),
            token,
            &json!({"content": "Trip\u{200B} to \u{202E}Rome"}),
        )
        .await;
    let (_, stored) = t.get(&format!("/api/chats/{id}"), token).await;
    assert_eq!(stored["title"], "Trip to Rome", "{stored}");
}
