//! Support tickets. Owners see their own tickets and the public part of the
//! thread; staff see every ticket, filter, assign, move status and write
//! staff-only notes. Someone else's ticket is 404 to a user.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::api::{audit, paging, search_term, usage, Paged};
use crate::error::{ApiResult, AppError, Json, Path, Query, Validator};
use crate::model::{
    new_id, usage_kind, Comment, Ticket, TicketCategory, TicketPriority, TicketQuery, TicketStatus,
};
use crate::policy::Caller;
use crate::state::AppState;
use crate::store::TicketUpdate;
use crate::time::now;

/// Filters for the ticket list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTicketsParams {
    pub status: Option<TicketStatus>,
    pub category: Option<TicketCategory>,
    /// A staff member's user id, `none` for unassigned tickets, or `me`.
    pub assignee: Option<String>,
    /// Part of the subject or body (case-insensitive).
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
        owner_id: (!caller.is_staff()).then(|| caller.id().to_owned()),
        status: params.status,
        category: params.category,
        assignee_id,
        search: search_term(params.q),
        limit,
        offset,
    };
    let page = state.store.list_tickets(&query).await?;
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

fn check_subject(v: &mut Validator, subject: &str) {
    v.check(
        (3..=200).contains(&subject.chars().count()) && !subject.chars().any(char::is_control),
        "subject",
        "must be 3 to 200 characters, without control characters",
    );
}

fn check_text(v: &mut Validator, field: &str, text: &str) {
    v.check(
        !text.trim().is_empty() && text.chars().count() <= 20_000,
        field,
        "must be 1 to 20000 characters",
    );
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
    let subject = req.subject.trim().to_owned();
    let mut v = Validator::new();
    check_subject(&mut v, &subject);
    check_text(&mut v, "body", &req.body);
    v.finish()?;
    crate::limits::room_for_ticket(&state, caller.id()).await?;
    if let Some(chat_id) = &req.chat_id {
        if state
            .store
            .get_chat(caller.id(), chat_id, now())
            .await?
            .is_none()
        {
            return Err(AppError::field("chat_id", "is not one of your chats"));
        }
    }
    let at = now();
    let ticket = Ticket {
        id: new_id(),
        number: 0,
        owner_id: caller.id().to_owned(),
        owner_username: caller.user.username.clone(),
        subject,
        body: req.body,
        category: req.category,
        priority: req.priority.unwrap_or(TicketPriority::Normal),
        status: TicketStatus::Open,
        assignee_id: None,
        assignee_username: None,
        chat_id: req.chat_id,
        created_at: at,
        updated_at: at,
        resolved_at: None,
    };
    let ticket = state.store.create_ticket(&ticket).await?;
    usage(&state, caller.id(), usage_kind::TICKET_OPENED).await;
    Ok((StatusCode::CREATED, Json(ticket)))
}

/// A ticket with the part of its thread the caller may see.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketWithComments {
    #[serde(flatten)]
    pub ticket: Ticket,
    pub comments: Vec<Comment>,
}

/// Finds a ticket by id or by number (`42` or `#42`) that the caller may
/// see; anything else is "not found".
async fn load(state: &AppState, caller: &Caller, key: &str) -> ApiResult<Ticket> {
    let number = key.strip_prefix('#').unwrap_or(key).parse::<i64>().ok();
    let found = match number {
        Some(n) => state.store.get_ticket_by_number(n).await?,
        None => state.store.get_ticket(key).await?,
    };
    found
        .filter(|t| caller.is_staff() || t.owner_id == caller.id())
        .ok_or(AppError::NotFound("ticket"))
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
    let ticket = load(&state, &caller, &id).await?;
    let comments = state
        .store
        .list_comments(&ticket.id, caller.is_staff())
        .await?;
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

/// Whether `by_staff` (or the owner) may move a ticket from `from` to `to`.
pub fn transition_allowed(from: TicketStatus, to: TicketStatus, by_staff: bool) -> bool {
    use TicketStatus::*;
    if from == to {
        return true;
    }
    if by_staff {
        matches!(
            (from, to),
            (Open, InProgress | Resolved | Closed)
                | (InProgress, Open | Resolved | Closed)
                | (Resolved, Open | InProgress | Closed)
        )
    } else {
        matches!((from, to), (Resolved, Open | Closed))
    }
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
    let before = load(&state, &caller, &id).await?;
    let staff = caller.is_staff();
    if !staff && (req.priority.is_some() || req.category.is_some() || req.assignee_id.is_some()) {
        return Err(AppError::Forbidden(
            "only staff can change priority, category or assignee".into(),
        ));
    }
    let mut changes = TicketUpdate::default();
    if let Some(to) = req.status {
        if !transition_allowed(before.status, to, staff) {
            return Err(if staff {
                AppError::Conflict(format!(
                    "a {:?} ticket cannot move to {:?}",
                    before.status, to
                ))
            } else {
                AppError::Forbidden("you can only reopen or close a resolved ticket".into())
            });
        }
        if to != before.status {
            // Checked against the status it was read with, so a transition
            // that raced another one cannot take an illegal path.
            changes.status = Some(to);
            changes.expected_status = Some(before.status);
            changes.resolved_at = match to {
                TicketStatus::Resolved => Some(Some(now())),
                TicketStatus::Open | TicketStatus::InProgress => Some(None),
                TicketStatus::Closed => None,
            };
        }
    }
    changes.priority = req.priority.filter(|p| *p != before.priority);
    changes.category = req.category.filter(|c| *c != before.category);
    if let Some(assignee) = req.assignee_id.as_deref().map(str::trim) {
        if assignee.is_empty() {
            if before.assignee_id.is_some() {
                changes.assignee = Some(None);
            }
        } else {
            let staff_user = state
                .store
                .get_user(assignee)
                .await?
                .filter(|u| u.is_staff() && !u.disabled)
                .ok_or_else(|| AppError::field("assignee_id", "is not an active staff member"))?;
            if before.assignee_id.as_deref() != Some(staff_user.id.as_str()) {
                changes.assignee = Some(Some((staff_user.id, staff_user.username)));
            }
        }
    }
    if changes == TicketUpdate::default() {
        return Ok(Json(before));
    }
    changes.updated_at = Some(now());
    let ticket = state
        .store
        .update_ticket(&before.id, &changes)
        .await?
        .ok_or_else(|| {
            AppError::Conflict(
                "the ticket's status changed meanwhile; reload it and try again".into(),
            )
        })?;
    if ticket.status == TicketStatus::Resolved && before.status != TicketStatus::Resolved {
        usage(&state, caller.id(), usage_kind::TICKET_RESOLVED).await;
    }
    if staff {
        let details = json!({
            "number": ticket.number,
            "status": ticket.status,
            "assignee": ticket.assignee_username,
            "priority": ticket.priority,
            "category": ticket.category,
        });
        audit(&state, &caller, "ticket.update", &ticket.id, details).await?;
    }
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
        (status = 409, description = "The ticket is closed", body = corral_sdk::ErrorBody),
    ))]
pub async fn comment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<NewCommentRequest>,
) -> ApiResult<(StatusCode, Json<Comment>)> {
    let mut v = Validator::new();
    check_text(&mut v, "body", &req.body);
    v.finish()?;
    let ticket = load(&state, &caller, &id).await?;
    if req.internal && !caller.is_staff() {
        return Err(AppError::Forbidden(
            "only staff can write internal notes".into(),
        ));
    }
    if ticket.status == TicketStatus::Closed {
        return Err(AppError::Conflict(
            "the ticket is closed; open a new one".into(),
        ));
    }
    let at = now();
    let comment = Comment {
        id: new_id(),
        ticket_id: ticket.id.clone(),
        author_id: caller.id().to_owned(),
        author_username: caller.user.username.clone(),
        author_is_staff: caller.is_staff(),
        body: req.body,
        internal: req.internal,
        created_at: at,
    };
    state.store.add_comment(&comment).await?;
    // The owner's reply reopens the ticket only if it is resolved when the
    // reply is stored; otherwise the reply touches nothing but `updated_at`.
    let reopened = if ticket.owner_id == caller.id() {
        let reopen = TicketUpdate {
            status: Some(TicketStatus::Open),
            expected_status: Some(TicketStatus::Resolved),
            resolved_at: Some(None),
            updated_at: Some(at),
            ..Default::default()
        };
        state.store.update_ticket(&ticket.id, &reopen).await?
    } else {
        None
    };
    if reopened.is_none() {
        let touch = TicketUpdate {
            updated_at: Some(at),
            ..Default::default()
        };
        state.store.update_ticket(&ticket.id, &touch).await?;
    }
    Ok((StatusCode::CREATED, Json(comment)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use TicketStatus::*;

    #[test]
    fn owners_can_only_reopen_or_close_resolved_tickets() {
        assert!(transition_allowed(Resolved, Open, false));
        assert!(transition_allowed(Resolved, Closed, false));
        assert!(!transition_allowed(Open, Resolved, false));
        assert!(!transition_allowed(Closed, Open, false));
    }

    #[test]
    fn staff_move_forward_and_closed_is_final() {
        assert!(transition_allowed(Open, InProgress, true));
        assert!(transition_allowed(InProgress, Resolved, true));
        assert!(transition_allowed(Resolved, Closed, true));
        assert!(!transition_allowed(Closed, Open, true));
        assert!(!transition_allowed(Closed, InProgress, true));
    }
}
