//! Accounts: the rules for usernames, passwords and display names,
//! account creation shared by the API and `corral admin create`, who may
//! act on whom, and the changes staff and account holders make (each
//! staff change audited).

use corral_sdk::Role;
use serde_json::json;
use tokio::sync::Mutex;

use crate::auth::hash_password_async;
use crate::error::{ApiResult, AppError, Validator};
use crate::model::{new_id, usage_kind, UsageEvent, User};
use crate::ratelimit::SignInLimiter;
use crate::sessions::verify_in_turn;
use crate::store::{Store, StoreError, UserUpdate};
use crate::time::now;
use corral_sdk::text::hides;

/// Whether staff of role `actor` may give an account the role `role` or
/// take it away: a technician any role, an admin the user and admin roles.
/// Only technicians make technicians, or an admin could give anyone (or
/// themselves) rights admins do not have.
pub fn may_grant(actor: Role, role: Role) -> bool {
    match actor {
        Role::Technician => true,
        Role::Admin => role != Role::Technician,
        Role::User => false,
    }
}

/// Whether staff of role `actor` may act on an account of role `target`
/// (reset its password, disable or enable it, edit it, set its quota):
/// only where they may grant its role. Otherwise an admin could reset a
/// technician's password and sign in as them.
pub fn may_manage(actor: Role, target: Role) -> bool {
    may_grant(actor, target)
}

/// [`may_grant`] as a result for the API.
pub fn ensure_may_grant(actor: &User, role: Role) -> ApiResult<()> {
    if may_grant(actor.role, role) {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "only a technician can grant or take away the {role} role"
        )))
    }
}

/// [`may_manage`] as a result for the API.
pub fn ensure_may_manage(actor: &User, target: &User) -> ApiResult<()> {
    ensure_may_manage_role(actor, target.role)
}

/// [`may_manage`] for every account of `role` (a quota set per role).
pub fn ensure_may_manage_role(actor: &User, role: Role) -> ApiResult<()> {
    if may_manage(actor.role, role) {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "only a technician can act on a {role} account (reset its password, disable, \
             enable or edit it, set its quota)"
        )))
    }
}

/// Ends every sign-in of an account: its refresh sessions are revoked and
/// its API keys deleted; returns how many keys. (Access tokens end with
/// the token-version bump written with the change that calls this.)
pub async fn revoke_access(store: &dyn Store, user_id: &str) -> ApiResult<u64> {
    store.revoke_user_sessions(user_id).await?;
    Ok(store.delete_user_api_keys(user_id).await?)
}

/// Keeps the API key `key_id`, just stored for `user` as the request read
/// the account, only while the account is still as read: a password
/// change, reset or disable that landed meanwhile deletes it again.
///
/// Those write the account first and delete its keys after, so either
/// this read sees the write, or their delete comes after the key was
/// stored and takes it too.
pub async fn keep_new_key(store: &dyn Store, user: &User, key_id: &str) -> ApiResult<()> {
    let current = store.get_user(&user.id).await?;
    if current
        .as_ref()
        .is_some_and(|u| u.token_version == user.token_version && !u.disabled)
    {
        return Ok(());
    }
    store.delete_api_key(&user.id, key_id).await?;
    if current.is_some_and(|u| u.disabled) {
        return Err(AppError::AccountDisabled);
    }
    Err(AppError::Unauthorized(
        "the account changed meanwhile; sign in again".into(),
    ))
}

/// The longest username.
pub const MAX_USERNAME_CHARS: usize = 32;

/// Lowercases and checks a username.
pub fn normalize_username(v: &mut Validator, username: &str) -> String {
    let name = username.trim().to_lowercase();
    v.check(
        (3..=MAX_USERNAME_CHARS).contains(&name.chars().count())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')),
        "username",
        "must be 3 to 32 characters: letters, digits, `_`, `-` or `.`",
    );
    name
}

/// Checks a new password.
pub fn check_password(v: &mut Validator, field: &str, password: &str) {
    v.check(
        (8..=128).contains(&password.chars().count()),
        field,
        "must be 8 to 128 characters",
    );
}

/// Trims and checks a display name; empty means "use the username".
pub fn normalize_display_name(v: &mut Validator, name: Option<&str>, username: &str) -> String {
    let name = name.map(str::trim).unwrap_or("");
    v.check(
        name.chars().count() <= 64 && !hides(name),
        "display_name",
        "must be at most 64 characters, without control or invisible formatting characters",
    );
    if name.is_empty() {
        username.to_owned()
    } else {
        name.to_owned()
    }
}

/// A new account of `role`, password hashed.
pub async fn new_user(
    username: String,
    display_name: String,
    role: Role,
    password: String,
) -> ApiResult<User> {
    let at = now();
    Ok(User {
        id: new_id(),
        username,
        display_name,
        role,
        disabled: false,
        password_hash: hash_password_async(password).await?,
        token_version: 0,
        created_at: at,
        updated_at: at,
        last_login_at: None,
    })
}

/// Maps a unique-key clash on users to a clear message.
pub fn username_taken(err: StoreError) -> AppError {
    match err {
        StoreError::Conflict(_) => AppError::Conflict("that username is taken".into()),
        other => other.into(),
    }
}

/// Validates and creates an account, counting it in the statistics.
pub async fn create_account(
    store: &dyn Store,
    username: &str,
    display_name: Option<&str>,
    role: Role,
    password: String,
) -> ApiResult<User> {
    let mut v = Validator::new();
    let username = normalize_username(&mut v, username);
    check_password(&mut v, "password", &password);
    let display_name = normalize_display_name(&mut v, display_name, &username);
    v.finish()?;
    let user = new_user(username, display_name, role, password).await?;
    store.create_user(&user).await.map_err(username_taken)?;
    let event = UsageEvent {
        id: new_id(),
        user_id: user.id.clone(),
        kind: usage_kind::USER_REGISTERED.to_owned(),
        at: user.created_at,
    };
    if let Err(err) = store.record_usage(&event).await {
        tracing::warn!(%err, "could not record a usage event");
    }
    Ok(user)
}

/// Settings key: whether anyone may create an account.
pub const REGISTRATION_OPEN: &str = "registration_open";

/// Whether self-registration is open (it is unless staff closed it).
pub async fn registration_open(store: &dyn Store) -> ApiResult<bool> {
    Ok(store
        .get_setting(REGISTRATION_OPEN)
        .await?
        .and_then(|v| v.as_bool())
        .unwrap_or(true))
}

/// Opens or closes self-registration; a change is audited, setting what
/// is already set writes nothing.
pub async fn set_registration_open(store: &dyn Store, actor: &User, open: bool) -> ApiResult<()> {
    if open != registration_open(store).await? {
        store.put_setting(REGISTRATION_OPEN, &json!(open)).await?;
        crate::audit::record(
            store,
            actor,
            "settings.update",
            REGISTRATION_OPEN,
            json!({"to": open}),
        )
        .await?;
    }
    Ok(())
}

/// Creates an account of role `user` for whoever asks, while
/// self-registration is open.
pub async fn register(
    store: &dyn Store,
    username: &str,
    display_name: Option<&str>,
    password: String,
) -> ApiResult<User> {
    if !registration_open(store).await? {
        return Err(AppError::Forbidden(
            "self-registration is closed; ask an admin for an account".into(),
        ));
    }
    create_account(store, username, display_name, Role::User, password).await
}

/// An account as staff ask for it.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub username: String,
    pub password: String,
    pub role: Role,
    pub display_name: Option<String>,
}

/// Creates an account for staff `actor`, who may give it only a role they
/// may grant; audited.
pub async fn create_by_staff(store: &dyn Store, actor: &User, new: NewAccount) -> ApiResult<User> {
    ensure_may_grant(actor, new.role)?;
    let user = create_account(
        store,
        &new.username,
        new.display_name.as_deref(),
        new.role,
        new.password,
    )
    .await?;
    crate::audit::record(
        store,
        actor,
        "user.create",
        &user.id,
        json!({"username": user.username, "role": user.role}),
    )
    .await?;
    Ok(user)
}

/// The account with `id`.
pub async fn get_user(store: &dyn Store, id: &str) -> ApiResult<User> {
    store.get_user(id).await?.ok_or(AppError::NotFound("user"))
}

/// What staff change on an account; `None` keeps what is stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountChanges {
    pub display_name: Option<String>,
    pub role: Option<Role>,
    /// `true` disables the account at once (its tokens stop working).
    pub disabled: Option<bool>,
}

/// Whether `before → after` would leave no active admin or technician.
pub fn removes_last_staff(before: &User, after: &User, active_staff: u64) -> bool {
    let was = before.is_staff() && !before.disabled;
    let is = after.is_staff() && !after.disabled;
    was && !is && active_staff <= 1
}

/// Whether `before → after` would leave no active technician. Only a
/// technician can make another, so none left means models and plugins
/// have no one to manage them until someone runs `corral admin` on the
/// server.
pub fn removes_last_technician(before: &User, after: &User, active_technicians: u64) -> bool {
    let active = |u: &User| u.role == Role::Technician && !u.disabled;
    active(before) && !active(after) && active_technicians <= 1
}

/// Applies staff `actor`'s `changes` to the account `id` and audits each
/// field that changed.
///
/// `actor` must be allowed to manage the account and to grant both its
/// old and new role; no change may leave the platform without an active
/// admin or technician. `staff_changes` is held from the read to the
/// write, so two changes racing each other cannot both pass that check.
/// Disabling ends every sign-in of the account and deletes its API keys.
pub async fn update_by_staff(
    store: &dyn Store,
    staff_changes: &Mutex<()>,
    actor: &User,
    id: &str,
    changes: AccountChanges,
) -> ApiResult<User> {
    let _guard = staff_changes.lock().await;
    let before = get_user(store, id).await?;
    ensure_may_manage(actor, &before)?;
    let mut user = before.clone();
    let mut v = Validator::new();
    if let Some(name) = changes.display_name.as_deref() {
        user.display_name = normalize_display_name(&mut v, Some(name), &user.username);
    }
    v.finish()?;
    if let Some(role) = changes.role {
        user.role = role;
    }
    if user.role != before.role {
        ensure_may_grant(actor, user.role)?;
    }
    if let Some(disabled) = changes.disabled {
        user.disabled = disabled;
    }
    if user == before {
        return Ok(user);
    }
    if removes_last_staff(&before, &user, store.count_active_staff().await?) {
        return Err(AppError::Conflict(
            "this is the last active admin or technician; promote another account first".into(),
        ));
    }
    if removes_last_technician(
        &before,
        &user,
        store.count_active_in_role(Role::Technician).await?,
    ) {
        return Err(AppError::Conflict(
            "this is the last active technician, and only a technician can make another; \
             make one first"
                .into(),
        ));
    }
    let disabling = user.disabled && !before.disabled;
    let update = UserUpdate {
        display_name: (user.display_name != before.display_name).then(|| user.display_name.clone()),
        role: (user.role != before.role).then_some(user.role),
        disabled: (user.disabled != before.disabled).then_some(user.disabled),
        updated_at: Some(now()),
        // Disabling ends every access token at once; enabling again
        // brings none of them back.
        bump_token_version: disabling,
        ..Default::default()
    };
    let user = store.update_user(id, &update).await?;
    let revoked_keys = if disabling {
        Some(revoke_access(store, id).await?)
    } else {
        None
    };
    if before.display_name != user.display_name {
        let details = json!({"from": before.display_name, "to": user.display_name});
        crate::audit::record(store, actor, "user.display_name", id, details).await?;
    }
    if before.role != user.role {
        let details = json!({"username": user.username, "from": before.role, "to": user.role});
        crate::audit::record(store, actor, "user.role", id, details).await?;
    }
    if before.disabled != user.disabled {
        let action = if user.disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        let mut details = json!({"username": user.username});
        if let Some(keys) = revoked_keys {
            details["api_keys_revoked"] = json!(keys);
        }
        crate::audit::record(store, actor, action, id, details).await?;
    }
    Ok(user)
}

/// Staff `actor` sets a new password on the account `id`: every session,
/// access token and API key of the account stops working; audited. Not on
/// their own account: that change asks for the current password, so a
/// stolen token or key cannot take the account over for good.
pub async fn reset_password(
    store: &dyn Store,
    staff_changes: &Mutex<()>,
    actor: &User,
    id: &str,
    new_password: String,
) -> ApiResult<()> {
    if actor.id == id {
        return Err(AppError::Forbidden(
            "change your own password with POST /api/me/password, which asks for the current one"
                .into(),
        ));
    }
    let mut v = Validator::new();
    check_password(&mut v, "new_password", &new_password);
    v.finish()?;
    // Checked before the (slow) hashing, and again under the lock, where
    // a concurrent role change cannot slip in between check and write.
    ensure_may_manage(actor, &get_user(store, id).await?)?;
    let password_hash = hash_password_async(new_password).await?;
    let _guard = staff_changes.lock().await;
    let user = get_user(store, id).await?;
    ensure_may_manage(actor, &user)?;
    let update = UserUpdate {
        password_hash: Some(password_hash),
        bump_token_version: true,
        updated_at: Some(now()),
        ..Default::default()
    };
    let user = store.update_user(&user.id, &update).await?;
    let keys = revoke_access(store, &user.id).await?;
    crate::audit::record(
        store,
        actor,
        "user.password_reset",
        id,
        json!({"username": user.username, "api_keys_revoked": keys}),
    )
    .await?;
    Ok(())
}

/// Sets the display name of `user`'s own account (empty: the username).
pub async fn rename_own(store: &dyn Store, user: &User, name: &str) -> ApiResult<User> {
    let mut v = Validator::new();
    let display_name = normalize_display_name(&mut v, Some(name), &user.username);
    v.finish()?;
    let update = UserUpdate {
        display_name: Some(display_name),
        updated_at: Some(now()),
        ..Default::default()
    };
    Ok(store.update_user(&user.id, &update).await?)
}

/// Changes `user`'s own password once `current_password` proves it is
/// theirs. Every sign-in, access token and API key of the account ends
/// (whoever knew the old password may have made them); returns the
/// account as stored now, for fresh tokens.
///
/// The current password is checked in the account's turn on `limiter`,
/// as a sign-in's is, so a stolen token cannot guess it faster.
pub async fn change_own_password(
    store: &dyn Store,
    limiter: &SignInLimiter,
    user: &User,
    current_password: String,
    new_password: String,
) -> ApiResult<User> {
    let mut v = Validator::new();
    check_password(&mut v, "new_password", &new_password);
    v.finish()?;
    let hash = user.password_hash.clone();
    if !verify_in_turn(limiter, &user.username, hash, current_password).await? {
        return Err(AppError::field(
            "current_password",
            "is not the current password",
        ));
    }
    let update = UserUpdate {
        password_hash: Some(hash_password_async(new_password).await?),
        bump_token_version: true,
        updated_at: Some(now()),
        // The current password was checked against what was read; a reset
        // or disable since then must not be overwritten.
        expect_token_version: Some(user.token_version),
        ..Default::default()
    };
    let user = match store.update_user(&user.id, &update).await {
        Err(StoreError::Conflict(_)) => {
            return Err(AppError::Conflict(
                "the account changed meanwhile; sign in again".into(),
            ))
        }
        result => result?,
    };
    revoke_access(store, &user.id).await?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staff_act_only_on_roles_they_may_grant() {
        for target in Role::ALL {
            assert!(
                may_manage(Role::Technician, target),
                "technician on {target}"
            );
            assert!(!may_manage(Role::User, target), "user on {target}");
        }
        assert!(may_manage(Role::Admin, Role::User));
        assert!(may_manage(Role::Admin, Role::Admin));
        assert!(!may_manage(Role::Admin, Role::Technician));
        assert!(!may_grant(Role::Admin, Role::Technician));
        assert!(may_grant(Role::Admin, Role::Admin));
    }

    #[test]
    fn last_staff_cannot_be_demoted_or_disabled() {
        let user = |role, disabled| User {
            role,
            disabled,
            ..testing::user("u", role)
        };
        let admin = user(Role::Admin, false);
        assert!(removes_last_staff(&admin, &user(Role::User, false), 1));
        assert!(removes_last_staff(&admin, &user(Role::Admin, true), 1));
        assert!(!removes_last_staff(
            &admin,
            &user(Role::Technician, false),
            1
        ));
        assert!(!removes_last_staff(&admin, &user(Role::User, false), 2));
        assert!(!removes_last_staff(
            &user(Role::User, false),
            &user(Role::User, true),
            1
        ));
    }

    async fn audit_actions(store: &dyn Store) -> Vec<String> {
        let query = crate::model::AuditQuery {
            actor_id: None,
            action: None,
            limit: 100,
            offset: 0,
        };
        let page = store.list_audit(&query).await.unwrap();
        let mut actions: Vec<String> = page.items.into_iter().map(|e| e.action).collect();
        actions.sort();
        actions
    }

    fn disable() -> AccountChanges {
        AccountChanges {
            disabled: Some(true),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_last_active_staff_account_stays_staff_and_enabled() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let lock = Mutex::new(());
        let admin = testing::insert(store, "ada", Role::Admin).await;
        for changes in [
            disable(),
            AccountChanges {
                role: Some(Role::User),
                ..Default::default()
            },
        ] {
            let err = update_by_staff(store, &lock, &admin, &admin.id, changes)
                .await
                .unwrap_err();
            assert_eq!(
                (err.status().as_u16(), err.to_string().as_str()),
                (
                    409,
                    "this is the last active admin or technician; promote another account first"
                )
            );
        }
        let stored = get_user(store, &admin.id).await.unwrap();
        assert_eq!(stored, admin);
        assert!(audit_actions(store).await.is_empty());

        // With a second admin, either may step down.
        let grace = testing::insert(store, "grace", Role::Admin).await;
        let demoted = AccountChanges {
            role: Some(Role::User),
            ..Default::default()
        };
        let after = update_by_staff(store, &lock, &grace, &admin.id, demoted)
            .await
            .unwrap();
        assert_eq!(after.role, Role::User);
        assert_eq!(audit_actions(store).await, ["user.role"]);
    }

    #[tokio::test]
    async fn admins_cannot_touch_technicians_or_make_them() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let lock = Mutex::new(());
        let admin = testing::insert(store, "ada", Role::Admin).await;
        let tech = testing::insert(store, "tess", Role::Technician).await;
        let user = testing::insert(store, "uma", Role::User).await;

        let err = update_by_staff(store, &lock, &admin, &tech.id, disable())
            .await
            .unwrap_err();
        assert_eq!((err.status().as_u16(), err.code()), (403, "forbidden"));
        let promote = AccountChanges {
            role: Some(Role::Technician),
            ..Default::default()
        };
        let err = update_by_staff(store, &lock, &admin, &user.id, promote)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "only a technician can grant or take away the technician role"
        );
        let err = reset_password(store, &lock, &admin, &tech.id, "a new password".into())
            .await
            .unwrap_err();
        assert_eq!((err.status().as_u16(), err.code()), (403, "forbidden"));
        let new = NewAccount {
            username: "newtech".into(),
            password: "long enough".into(),
            role: Role::Technician,
            display_name: None,
        };
        let err = create_by_staff(store, &admin, new).await.unwrap_err();
        assert_eq!((err.status().as_u16(), err.code()), (403, "forbidden"));
        assert!(store
            .get_user_by_username("newtech")
            .await
            .unwrap()
            .is_none());

        assert_eq!(get_user(store, &tech.id).await.unwrap(), tech);
        assert_eq!(get_user(store, &user.id).await.unwrap(), user);
        assert!(audit_actions(store).await.is_empty());
        let err = get_user(store, "no-such-id").await.unwrap_err();
        assert_eq!(err.to_string(), "user not found");
    }

    #[tokio::test]
    async fn disabling_ends_every_sign_in_and_is_audited() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let lock = Mutex::new(());
        let admin = testing::insert(store, "ada", Role::Admin).await;
        let user = testing::insert(store, "uma", Role::User).await;
        let key = crate::model::ApiKey {
            id: new_id(),
            user_id: user.id.clone(),
            name: "scripts".into(),
            prefix: "crl_x".into(),
            key_hash: "hash-of-the-key".into(),
            created_at: now(),
            last_used_at: None,
            expires_at: None,
        };
        store.create_api_key(&key).await.unwrap();

        let after = update_by_staff(store, &lock, &admin, &user.id, disable())
            .await
            .unwrap();
        assert!(after.disabled);
        assert_eq!(after.token_version, user.token_version + 1);
        assert!(store.list_api_keys(&user.id).await.unwrap().is_empty());
        let query = crate::model::AuditQuery {
            actor_id: Some(admin.id.clone()),
            action: Some("user.disable".into()),
            limit: 10,
            offset: 0,
        };
        let entries = store.list_audit(&query).await.unwrap().items;
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].target, user.id);
        assert_eq!(
            entries[0].details,
            json!({"username": "uma", "api_keys_revoked": 1})
        );

        // The same change again writes and audits nothing.
        let again = update_by_staff(store, &lock, &admin, &user.id, disable())
            .await
            .unwrap();
        assert_eq!(again, after);
        assert_eq!(audit_actions(store).await, ["user.disable"]);
    }

    #[tokio::test]
    async fn a_bad_display_name_changes_nothing() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let lock = Mutex::new(());
        let admin = testing::insert(store, "ada", Role::Admin).await;
        let user = testing::insert(store, "uma", Role::User).await;
        let changes = AccountChanges {
            display_name: Some("bell\u{7}".into()),
            disabled: Some(true),
            ..Default::default()
        };
        let err = update_by_staff(store, &lock, &admin, &user.id, changes)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "validation_failed");
        assert_eq!(get_user(store, &user.id).await.unwrap(), user);
    }

    #[tokio::test]
    async fn a_password_change_loses_to_a_reset_that_came_first() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let limiter = SignInLimiter::default();
        let mut user = testing::user("uma", Role::User);
        user.password_hash = crate::auth::hash_password("old password").unwrap();
        store.create_user(&user).await.unwrap();
        let err = change_own_password(
            store,
            &limiter,
            &user,
            "not it".into(),
            "new password".into(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), "validation_failed");

        // A reset lands after the caller's account was read.
        let reset = UserUpdate {
            bump_token_version: true,
            ..Default::default()
        };
        store.update_user(&user.id, &reset).await.unwrap();
        let err = change_own_password(
            store,
            &limiter,
            &user,
            "old password".into(),
            "new password".into(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            (err.status().as_u16(), err.to_string().as_str()),
            (409, "the account changed meanwhile; sign in again")
        );

        let current = get_user(store, &user.id).await.unwrap();
        let after = change_own_password(
            store,
            &limiter,
            &current,
            "old password".into(),
            "new password".into(),
        )
        .await
        .unwrap();
        assert_eq!(after.token_version, current.token_version + 1);
        assert!(crate::auth::verify_password(
            &after.password_hash,
            "new password"
        ));
    }

    #[tokio::test]
    async fn a_key_made_while_the_account_changes_is_not_kept() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let user = testing::insert(store, "uma", Role::User).await;
        let key = |id: &str| crate::model::ApiKey {
            id: id.into(),
            user_id: user.id.clone(),
            name: "scripts".into(),
            prefix: "crl_".into(),
            key_hash: format!("hash-{id}"),
            created_at: now(),
            last_used_at: None,
            expires_at: None,
        };
        store.create_api_key(&key("kept")).await.unwrap();
        keep_new_key(store, &user, "kept").await.unwrap();

        for change in [
            UserUpdate {
                bump_token_version: true,
                ..Default::default()
            },
            UserUpdate {
                disabled: Some(true),
                ..Default::default()
            },
        ] {
            // The account changes after the request read it, and before
            // its key was stored.
            let read = get_user(store, &user.id).await.unwrap();
            store.update_user(&user.id, &change).await.unwrap();
            store.create_api_key(&key("late")).await.unwrap();
            let err = keep_new_key(store, &read, "late").await.unwrap_err();
            let want = if change.disabled.is_some() {
                (403, "account_disabled")
            } else {
                (401, "unauthorized")
            };
            assert_eq!((err.status().as_u16(), err.code()), want);
            let left: Vec<_> = store
                .list_api_keys(&user.id)
                .await
                .unwrap()
                .into_iter()
                .map(|k| k.id)
                .collect();
            assert_eq!(left, ["kept"]);
        }
    }

    #[tokio::test]
    async fn registration_changes_are_audited_once() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let admin = testing::insert(store, "ada", Role::Admin).await;
        assert!(registration_open(store).await.unwrap());
        set_registration_open(store, &admin, true).await.unwrap();
        assert!(audit_actions(store).await.is_empty());
        set_registration_open(store, &admin, false).await.unwrap();
        assert!(!registration_open(store).await.unwrap());
        assert_eq!(audit_actions(store).await, ["settings.update"]);
        let err = register(store, "newcomer", None, "long enough".into())
            .await
            .unwrap_err();
        assert_eq!(
            (err.status().as_u16(), err.to_string().as_str()),
            (
                403,
                "self-registration is closed; ask an admin for an account"
            )
        );
        assert!(store
            .get_user_by_username("newcomer")
            .await
            .unwrap()
            .is_none());
    }
}

/// A store and accounts for the tests of the services.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::*;
    use crate::store::sqlite::SqliteStore;

    /// An empty embedded store in a folder removed when the first value
    /// is dropped.
    pub fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store = SqliteStore::open(&dir.path().join("corral.db")).expect("opening the store");
        (dir, Arc::new(store))
    }

    /// An enabled account named `username`, not stored; its password
    /// hash matches no password.
    pub fn user(username: &str, role: Role) -> User {
        let at = now();
        User {
            id: new_id(),
            username: username.into(),
            display_name: username.into(),
            role,
            disabled: false,
            password_hash: String::new(),
            token_version: 0,
            created_at: at,
            updated_at: at,
            last_login_at: None,
        }
    }

    /// [`user`], stored, as read back.
    pub async fn insert(store: &dyn Store, username: &str, role: Role) -> User {
        let user = user(username, role);
        store.create_user(&user).await.expect("storing an account");
        store
            .get_user(&user.id)
            .await
            .expect("reading an account")
            .expect("the account just stored")
    }
}
