//! Accounts: the rules for usernames, passwords and display names, and
//! account creation shared by the API and `corral admin create`.

use corral_sdk::Role;

use crate::auth::hash_password_async;
use crate::error::{ApiResult, AppError, Validator};
use crate::model::{new_id, usage_kind, UsageEvent, User};
use crate::store::{Store, StoreError};
use crate::time::now;

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
        name.chars().count() <= 64 && !name.chars().any(char::is_control),
        "display_name",
        "must be at most 64 characters, without control characters",
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
}
