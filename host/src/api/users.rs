//! User management for admins and technicians. Every change is audited.

use axum::extract::State;
use axum::http::StatusCode;
use corral_sdk::Role;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::accounts::{
    check_password, create_account, ensure_may_grant, ensure_may_manage, normalize_display_name,
    revoke_access,
};
use crate::api::{audit, paging, search_term, Paged, UserView};
use crate::auth::hash_password_async;
use crate::error::{ApiResult, AppError, Json, Path, Query, Validator};
use crate::model::{User, UserQuery};
use crate::policy::Caller;
use crate::state::AppState;
use crate::store::UserUpdate;
use crate::time::now;

/// Filters for the user list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListUsersParams {
    /// Part of a username or display name (case-insensitive).
    pub q: Option<String>,
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Matches to skip.
    #[param(maximum = 1_000_000_000)]
    pub offset: Option<u64>,
}

/// List accounts, by username.
#[utoipa::path(get, path = "/api/users", tag = "users",
    params(ListUsersParams),
    responses((status = 200, description = "A page of accounts", body = Paged<UserView>)))]
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListUsersParams>,
) -> ApiResult<Json<Paged<UserView>>> {
    let (limit, offset) = paging(params.limit, params.offset)?;
    let page = state
        .store
        .list_users(&UserQuery {
            search: search_term(params.q).map(|s| s.to_lowercase()),
            role: params.role,
            disabled: params.disabled,
            limit,
            offset,
        })
        .await?;
    Ok(Json(Paged {
        items: page.items.iter().map(UserView::from).collect(),
        total: page.total,
        limit,
        offset,
    }))
}

/// A new account made by staff.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// 3 to 32 letters, digits, `_`, `-` or `.`; stored lowercase.
    #[schema(
        example = "grace",
        min_length = 3,
        max_length = 32,
        pattern = r"^[A-Za-z0-9_.-]+$"
    )]
    pub username: String,
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    pub role: Role,
    #[schema(max_length = 64, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub display_name: Option<String>,
}

/// Create an account with any role.
#[utoipa::path(post, path = "/api/users", tag = "users",
    request_body = CreateUserRequest,
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 403, description = "Only technicians can create technicians", body = corral_sdk::ErrorBody),
        (status = 409, description = "The username is taken", body = corral_sdk::ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    ensure_may_grant(&caller.user, req.role)?;
    let user = create_account(
        state.store.as_ref(),
        &req.username,
        req.display_name.as_deref(),
        req.role,
        req.password,
    )
    .await?;
    audit(
        &state,
        &caller,
        "user.create",
        &user.id,
        json!({"username": user.username, "role": user.role}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

async fn load(state: &AppState, id: &str) -> ApiResult<User> {
    state
        .store
        .get_user(id)
        .await?
        .ok_or(AppError::NotFound("user"))
}

/// One account.
#[utoipa::path(get, path = "/api/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The account", body = UserView),
        (status = 404, description = "No such user", body = corral_sdk::ErrorBody),
    ))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(UserView::from(&load(&state, &id).await?)))
}

/// Changes to an account; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[schema(max_length = 64, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub display_name: Option<String>,
    pub role: Option<Role>,
    /// `true` disables the account at once (its tokens stop working).
    pub disabled: Option<bool>,
}

/// Whether `before → after` would leave no active admin or technician.
fn removes_last_staff(before: &User, after: &User, active_staff: u64) -> bool {
    let was = before.is_staff() && !before.disabled;
    let is = after.is_staff() && !after.disabled;
    was && !is && active_staff <= 1
}

/// Edit an account's display name, role or disabled flag.
#[utoipa::path(patch, path = "/api/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "Updated", body = UserView),
        (status = 403, description = "Only technicians can act on a technician's account, or grant or take away the technician role", body = corral_sdk::ErrorBody),
        (status = 404, description = "No such user", body = corral_sdk::ErrorBody),
        (status = 409, description = "Would leave no active admin or technician", body = corral_sdk::ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<UpdateUserRequest>,
) -> ApiResult<Json<UserView>> {
    let _guard = state.staff_changes.lock().await;
    let before = load(&state, &id).await?;
    ensure_may_manage(&caller.user, &before)?;
    let mut user = before.clone();
    let mut v = Validator::new();
    if let Some(name) = req.display_name.as_deref() {
        user.display_name = normalize_display_name(&mut v, Some(name), &user.username);
    }
    v.finish()?;
    if let Some(role) = req.role {
        user.role = role;
    }
    if user.role != before.role {
        ensure_may_grant(&caller.user, user.role)?;
    }
    if let Some(disabled) = req.disabled {
        user.disabled = disabled;
    }
    if user == before {
        return Ok(Json(UserView::from(&user)));
    }
    if removes_last_staff(&before, &user, state.store.count_active_staff().await?) {
        return Err(AppError::Conflict(
            "this is the last active admin or technician; promote another account first".into(),
        ));
    }
    let disabling = user.disabled && !before.disabled;
    let changes = UserUpdate {
        display_name: (user.display_name != before.display_name).then(|| user.display_name.clone()),
        role: (user.role != before.role).then_some(user.role),
        disabled: (user.disabled != before.disabled).then_some(user.disabled),
        updated_at: Some(now()),
        // Disabling ends every access token at once; enabling again
        // brings none of them back.
        bump_token_version: disabling,
        ..Default::default()
    };
    let user = state.store.update_user(&id, &changes).await?;
    let revoked_keys = if disabling {
        Some(revoke_access(state.store.as_ref(), &id).await?)
    } else {
        None
    };
    if before.display_name != user.display_name {
        let details = json!({"from": before.display_name, "to": user.display_name});
        audit(&state, &caller, "user.display_name", &id, details).await?;
    }
    if before.role != user.role {
        let details = json!({"username": user.username, "from": before.role, "to": user.role});
        audit(&state, &caller, "user.role", &id, details).await?;
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
        audit(&state, &caller, action, &id, details).await?;
    }
    Ok(Json(UserView::from(&user)))
}

/// A password set by staff.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    #[schema(min_length = 8, max_length = 128)]
    pub new_password: String,
}

/// Reset an account's password. All its sessions, access tokens and API
/// keys stop working.
#[utoipa::path(post, path = "/api/users/{id}/password", tag = "users",
    params(("id" = String, Path, description = "User id")),
    request_body = ResetPasswordRequest,
    responses(
        (status = 204, description = "Password reset"),
        (status = 403, description = "Only technicians can reset a technician's password", body = corral_sdk::ErrorBody),
        (status = 404, description = "No such user", body = corral_sdk::ErrorBody),
    ))]
pub async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<ResetPasswordRequest>,
) -> ApiResult<StatusCode> {
    let mut v = Validator::new();
    check_password(&mut v, "new_password", &req.new_password);
    v.finish()?;
    // Checked before the (slow) hashing, and again under the lock, where
    // a concurrent role change cannot slip in between check and write.
    ensure_may_manage(&caller.user, &load(&state, &id).await?)?;
    let password_hash = hash_password_async(req.new_password).await?;
    let _guard = state.staff_changes.lock().await;
    let user = load(&state, &id).await?;
    ensure_may_manage(&caller.user, &user)?;
    let changes = UserUpdate {
        password_hash: Some(password_hash),
        bump_token_version: true,
        updated_at: Some(now()),
        ..Default::default()
    };
    let user = state.store.update_user(&user.id, &changes).await?;
    let keys = revoke_access(state.store.as_ref(), &user.id).await?;
    audit(
        &state,
        &caller,
        "user.password_reset",
        &id,
        json!({"username": user.username, "api_keys_revoked": keys}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role, disabled: bool) -> User {
        let at = now();
        User {
            id: "u".into(),
            username: "u".into(),
            display_name: "u".into(),
            role,
            disabled,
            password_hash: String::new(),
            token_version: 0,
            created_at: at,
            updated_at: at,
            last_login_at: None,
        }
    }

    #[test]
    fn last_staff_cannot_be_demoted_or_disabled() {
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
}
