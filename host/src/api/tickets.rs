//! Support tickets. Owners see their own tickets and the public part of the
//! thread; staff see every ticket, filter, assign, move status and write
//! staff-only notes. Someone else's ticket is 404 to a user. The rules are
//! in [`crate::tickets`].

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{paging, search_term, Paged};
use crate::error::{ApiResult, Json, Path, Query};
use crate::model::{Comment, Ticket, TicketCategory, TicketPriority, TicketQuery, TicketStatus};
use crate::policy::Caller;
use crate::state::AppState;
use crate::tickets::{NewComment, NewTicket, TicketChanges};

/// Filters for the ticket list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTicketsParams {
    pub status: Option<TicketStatus>,
    pub category: Option<TicketCategory>,
    /// A staff member's user id, `none` for unassigned tickets, or `me`.
    pub assignee: Option<String>,
    /// Part of the subject or body (case-insensitive).
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Matches to skip.
    #[param(maximum = 1_000_000_000)]
    pub offset: Option<u64>,
}

/// Tickets, most recently updated first: staff see all, users their own.
#[utoipa::path(get, path = "/api/tickets", tag = "tickets",
    params(ListTicketsParams),
    responses((status = 200, description = "A page of tickets", body = Paged<Ticket>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListTicketsParams>,
) -> ApiResult<Json<Paged<Ticket>>> {
    let (limit, offset) = paging(params.limit, params.offset)?;
    let assignee_id = match params.assignee.as_deref().map(str::trim) {
        None | Some("") => None,
        Some("none") => Some(None),
        Some("me") => Some(Some(caller.id().to_owned())),
        Some(id) => Some(Some(id.to_owned())),
    };
    let query = TicketQuery {
        owner_id: None,
        status: params.status,
        category: params.category,
        assignee_id,
        search: search_term(params.q)?,
        limit,
        offset,
    };
    let page = crate::tickets::list(state.store.as_ref(), &caller.user, query).await?;
    Ok(Json(Paged {
        items: page.items,
        total: page.total,
        limit,
        offset,
    }))
}

/// A new ticket.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTicketRequest {
    #[schema(
        example = "Answers stop mid-sentence",
        min_length = 3,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub subject: String,
    #[schema(
        example = "Since this morning every answer ends after a few words.",
        min_length = 1,
        max_length = 20000,
        pattern = r"\S"
    )]
    pub body: String,
    pub category: TicketCategory,
    /// Default `normal`.
    pub priority: Option<TicketPriority>,
    /// One of the caller's chats the ticket is about.
    pub chat_id: Option<String>,
}

/// Open a ticket.
#[utoipa::path(post, path = "/api/tickets", tag = "tickets",
    request_body = CreateTicketRequest,
    responses(
        (status = 201, description = "Opened", body = Ticket),
        (status = 409, description = "The account has as many open tickets as it may (`limit_reached`)", body = corral_sdk::ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateTicketRequest>,
) -> ApiResult<(StatusCode, Json<Ticket>)> {
    let new = NewTicket {
        subject: req.subject,
        body: req.body,
        category: req.category,
        priority: req.priority,
        chat_id: req.chat_id,
    };
    let room = crate::limits::room_for_ticket(&state, caller.id());
    let ticket = crate::tickets::open(state.store.as_ref(), &caller.user, new, room).await?;
    Ok((StatusCode::CREATED, Json(ticket)))
}

/// A ticket with the part of its thread the caller may see.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketWithComments {
    #[serde(flatten)]
    pub ticket: Ticket,
    pub comments: Vec<Comment>,
}

/// One ticket with its thread (staff also see internal notes).
#[utoipa::path(get, path = "/api/tickets/{id}", tag = "tickets",
    params(("id" = String, Path, description = "Ticket id or number (`42`)")),
    responses(
        (status = 200, description = "The ticket", body = TicketWithComments),
        (status = 404, description = "No such ticket visible to the caller", body = corral_sdk::ErrorBody),
    ))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TicketWithComments>> {
    let (ticket, comments) =
        crate::tickets::thread(state.store.as_ref(), &caller.user, &id).await?;
    Ok(Json(TicketWithComments { ticket, comments }))
}

/// Changes to a ticket. Staff may set any field; the owner may only move a
/// resolved ticket back to `open` (reopen) or on to `closed`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTicketRequest {
    pub status: Option<TicketStatus>,
    pub priority: Option<TicketPriority>,
    pub category: Option<TicketCategory>,
    /// A staff member's user id; `""` unassigns.
    pub assignee_id: Option<String>,
}

/// Change a ticket's status, priority, category or assignee.
#[utoipa::path(patch, path = "/api/tickets/{id}", tag = "tickets",
    params(("id" = String, Path, description = "Ticket id or number")),
    request_body = UpdateTicketRequest,
    responses(
        (status = 200, description = "Updated", body = Ticket),
        (status = 403, description = "The caller may not make this change", body = corral_sdk::ErrorBody),
        (status = 404, description = "No such ticket visible to the caller", body = corral_sdk::ErrorBody),
        (status = 409, description = "The status cannot move that way", body = corral_sdk::ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<UpdateTicketRequest>,
) -> ApiResult<Json<Ticket>> {
    let changes = TicketChanges {
        status: req.status,
        priority: req.priority,
        category: req.category,
        assignee_id: req.assignee_id,
    };
    let ticket = crate::tickets::update(state.store.as_ref(), &caller.user, &id, changes).await?;
    Ok(Json(ticket))
}

/// A reply in a ticket's thread.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCommentRequest {
    #[schema(
        example = "Could you tell us which model you were using?",
        min_length = 1,
        max_length = 20000,
        pattern = r"\S"
    )]
    pub body: String,
    /// Staff only: a note the ticket's owner never sees.
    #[serde(default)]
    pub internal: bool,
}

/// Reply in a ticket's thread. A reply from the owner moves a resolved
/// ticket back to open, as a reply means it is not settled.
#[utoipa::path(post, path = "/api/tickets/{id}/comments", tag = "tickets",
    params(("id" = String, Path, description = "Ticket id or number")),
    request_body = NewCommentRequest,
    responses(
        (status = 201, description = "Added", body = Comment),
        (status = 403, description = "Internal notes are for staff", body = corral_sdk::ErrorBody),
        (status = 404, description = "No such ticket visible to the caller", body = corral_sdk::ErrorBody),
        (status = 409, description = "The ticket is closed (`conflict`), or holds `max_comments_per_ticket` replies (or notes, for a note) or 2 MiB of their text (`limit_reached`)", body = corral_sdk::ErrorBody),
    ))]
pub async fn comment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<NewCommentRequest>,
) -> ApiResult<(StatusCode, Json<Comment>)> {
    let new = NewComment {
        body: req.body,
        internal: req.internal,
    };
    let comment = crate::tickets::comment(
        state.store.as_ref(),
        &caller.user,
        &id,
        new,
        state.config.max_comments_per_ticket,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(comment)))
}
