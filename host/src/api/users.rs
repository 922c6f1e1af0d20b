//! User management for admins and technicians. Every change is audited;
//! who may act on whom is decided in [`crate::accounts`].

use axum::extract::State;
use axum::http::StatusCode;
use corral_sdk::Role;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::accounts::{self, AccountChanges, NewAccount};
use crate::api::{paging, search_term, Paged, UserView};
use crate::error::{ApiResult, AppError, Json, Path, Query};
use crate::model::UserQuery;
use crate::policy::Caller;
use crate::state::AppState;

/// Filters for the user list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListUsersParams {
    /// Part of a username or display name (case-insensitive).
    #[param(max_length = 200)]
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
            search: search_term(params.q)?.map(|s| s.to_lowercase()),
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
        (status = 403, description = "Only technicians can create technicians; staff accounts are made from a sign-in, not with an API key", body = corral_sdk::ErrorBody),
        (status = 409, description = "The username is taken", body = corral_sdk::ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    if req.role != Role::User {
        signed_in(&caller, "making a staff account")?;
    }
    let new = NewAccount {
        username: req.username,
        password: req.password,
        role: req.role,
        display_name: req.display_name,
    };
    let user = accounts::create_by_staff(state.store.as_ref(), &caller.user, new).await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
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
    let user = accounts::get_user(state.store.as_ref(), &id).await?;
    Ok(Json(UserView::from(&user)))
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

/// Edit an account's display name, role or disabled flag.
#[utoipa::path(patch, path = "/api/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "Updated", body = UserView),
        (status = 403, description = "Only technicians can act on a technician's account, or grant or take away the technician role; roles are changed, and accounts enabled, from a sign-in, not with an API key", body = corral_sdk::ErrorBody),
        (status = 404, description = "No such user", body = corral_sdk::ErrorBody),
        (status = 409, description = "Would leave no active admin or technician, or no active technician", body = corral_sdk::ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<UpdateUserRequest>,
) -> ApiResult<Json<UserView>> {
    if req.role.is_some() {
        signed_in(&caller, "changing a role")?;
    }
    // An account enabled again signs in with what its holder knows, after
    // the key is gone; disabling (or leaving an account enabled) stays open
    // to keys.
    if req.disabled == Some(false) && caller.api_key_id.is_some() {
        let target = state.store.get_user(&id).await?;
        if target.is_some_and(|u| u.disabled) {
            signed_in(&caller, "enabling an account")?;
        }
    }
    let changes = AccountChanges {
        display_name: req.display_name,
        role: req.role,
        disabled: req.disabled,
    };
    let user = accounts::update_by_staff(
        state.store.as_ref(),
        &state.staff_changes,
        &caller.user,
        &id,
        changes,
    )
    .await?;
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
        (status = 403, description = "Only technicians can reset a technician's password, and no one their own here: `/api/me/password` asks for the current one; not with an API key", body = corral_sdk::ErrorBody),
        (status = 404, description = "No such user", body = corral_sdk::ErrorBody),
    ))]
pub async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<ResetPasswordRequest>,
) -> ApiResult<StatusCode> {
    signed_in(&caller, "resetting a password")?;
    accounts::reset_password(
        state.store.as_ref(),
        &state.staff_changes,
        &caller.user,
        &id,
        req.new_password,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses `what` to a caller using an API key: an account it makes, a
/// role it grants or a password it sets would give access that outlives
/// the key's revocation, so these come from a sign-in.
fn signed_in(caller: &Caller, what: &str) -> ApiResult<()> {
    if caller.api_key_id.is_some() {
        return Err(AppError::Forbidden(format!(
            "{what} needs a sign-in, not an API key: what a key did must end when it is revoked"
        )));
    }
    Ok(())
}
