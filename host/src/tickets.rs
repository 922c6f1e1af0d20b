//! Support tickets: who sees which, how a ticket's status may move, and
//! what a move or a reply sets off.
//!
//! Owners see their own tickets and the public part of the thread; staff
//! see every ticket and internal notes, assign, move status and set
//! priority and category. A ticket someone may not see does not exist for
//! them. Staff changes are audited.

use std::future::Future;

use serde_json::json;

use crate::error::{ApiResult, AppError, Validator};
use crate::model::{
    new_id, usage_kind, Comment, Page, Ticket, TicketCategory, TicketPriority, TicketQuery,
    TicketStatus, User,
};
use crate::store::{Store, TicketUpdate};
use crate::time::now;
use corral_sdk::text::hides;

/// Whether `by_staff` (or else the owner) may move a ticket from `from`
/// to `to`. Closed is final; an owner may only reopen or close a resolved
/// ticket.
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

fn check_subject(v: &mut Validator, subject: &str) {
    v.check(
        (3..=200).contains(&subject.chars().count()) && !hides(subject),
        "subject",
        "must be 3 to 200 characters, without control or invisible formatting characters",
    );
}

fn check_text(v: &mut Validator, field: &str, text: &str) {
    v.check(
        !text.trim().is_empty() && text.chars().count() <= 20_000,
        field,
        "must be 1 to 20000 characters",
    );
}

/// A ticket as its owner asks for it.
#[derive(Debug, Clone)]
pub struct NewTicket {
    pub subject: String,
    pub body: String,
    pub category: TicketCategory,
    /// Default `normal`.
    pub priority: Option<TicketPriority>,
    /// One of the owner's chats the ticket is about.
    pub chat_id: Option<String>,
}

/// Opens a ticket for `owner` and counts it in the statistics.
///
/// `room` refuses when the owner has as many open tickets as they may
/// (see [`crate::limits::room_for_ticket`]); it is awaited only once the
/// ticket itself is valid, so a bad request is told what is wrong with it
/// first.
pub async fn open(
    store: &dyn Store,
    owner: &User,
    new: NewTicket,
    room: impl Future<Output = ApiResult<()>>,
) -> ApiResult<Ticket> {
    let subject = new.subject.trim().to_owned();
    let mut v = Validator::new();
    check_subject(&mut v, &subject);
    check_text(&mut v, "body", &new.body);
    v.finish()?;
    room.await?;
    if let Some(chat_id) = &new.chat_id {
        if store.get_chat(&owner.id, chat_id, now()).await?.is_none() {
            return Err(AppError::field("chat_id", "is not one of your chats"));
        }
    }
    let at = now();
    let ticket = Ticket {
        id: new_id(),
        number: 0,
        owner_id: owner.id.clone(),
        owner_username: owner.username.clone(),
        subject,
        body: new.body,
        category: new.category,
        priority: new.priority.unwrap_or(TicketPriority::Normal),
        status: TicketStatus::Open,
        assignee_id: None,
        assignee_username: None,
        chat_id: new.chat_id,
        created_at: at,
        updated_at: at,
        resolved_at: None,
    };
    let ticket = store.create_ticket(&ticket).await?;
    crate::usage::record(store, &owner.id, usage_kind::TICKET_OPENED).await;
    Ok(ticket)
}

/// The tickets `viewer` may see that match `query`, most recently updated
/// first: staff see all, anyone else only their own (whatever `query`
/// says about the owner).
pub async fn list(store: &dyn Store, viewer: &User, query: TicketQuery) -> ApiResult<Page<Ticket>> {
    let query = TicketQuery {
        owner_id: if viewer.is_staff() {
            query.owner_id
        } else {
            Some(viewer.id.clone())
        },
        ..query
    };
    Ok(store.list_tickets(&query).await?)
}

/// The ticket with id `key`, or number `key` (`42` or `#42`), when
/// `viewer` may see it; anything else is "not found".
pub async fn find(store: &dyn Store, viewer: &User, key: &str) -> ApiResult<Ticket> {
    let number = key.strip_prefix('#').unwrap_or(key).parse::<i64>().ok();
    let found = match number {
        Some(n) => store.get_ticket_by_number(n).await?,
        None => store.get_ticket(key).await?,
    };
    found
        .filter(|t| viewer.is_staff() || t.owner_id == viewer.id)
        .ok_or(AppError::NotFound("ticket"))
}

/// A ticket `viewer` may see (see [`find`]) with the part of its thread
/// they may see: staff also internal notes.
pub async fn thread(
    store: &dyn Store,
    viewer: &User,
    key: &str,
) -> ApiResult<(Ticket, Vec<Comment>)> {
    let ticket = find(store, viewer, key).await?;
    let comments = store.list_comments(&ticket.id, viewer.is_staff()).await?;
    Ok((ticket, comments))
}

/// Changes to a ticket; `None` keeps what is stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TicketChanges {
    pub status: Option<TicketStatus>,
    pub priority: Option<TicketPriority>,
    pub category: Option<TicketCategory>,
    /// A staff member's user id; `""` unassigns.
    pub assignee_id: Option<String>,
}

/// Applies `actor`'s `changes` to the ticket `key` (see [`find`]).
///
/// Staff may change anything, moving the status only as
/// [`transition_allowed`] says; the owner may only reopen or close a
/// resolved ticket. Resolving stamps `resolved_at` and counts in the
/// statistics; reopening clears it. The status is written only while it
/// is still the one read, so a move that raced another cannot take an
/// illegal path. Changes by staff are audited.
pub async fn update(
    store: &dyn Store,
    actor: &User,
    key: &str,
    changes: TicketChanges,
) -> ApiResult<Ticket> {
    let before = find(store, actor, key).await?;
    let staff = actor.is_staff();
    if !staff
        && (changes.priority.is_some()
            || changes.category.is_some()
            || changes.assignee_id.is_some())
    {
        return Err(AppError::Forbidden(
            "only staff can change priority, category or assignee".into(),
        ));
    }
    let mut update = TicketUpdate::default();
    if let Some(to) = changes.status {
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
            update.status = Some(to);
            update.expected_status = Some(before.status);
            update.resolved_at = match to {
                TicketStatus::Resolved => Some(Some(now())),
                TicketStatus::Open | TicketStatus::InProgress => Some(None),
                TicketStatus::Closed => None,
            };
        }
    }
    update.priority = changes.priority.filter(|p| *p != before.priority);
    update.category = changes.category.filter(|c| *c != before.category);
    if let Some(assignee) = changes.assignee_id.as_deref().map(str::trim) {
        if assignee.is_empty() {
            if before.assignee_id.is_some() {
                update.assignee = Some(None);
            }
        } else {
            let staff_user = store
                .get_user(assignee)
                .await?
                .filter(|u| u.is_staff() && !u.disabled)
                .ok_or_else(|| AppError::field("assignee_id", "is not an active staff member"))?;
            if before.assignee_id.as_deref() != Some(staff_user.id.as_str()) {
                update.assignee = Some(Some((staff_user.id, staff_user.username)));
            }
        }
    }
    if update == TicketUpdate::default() {
        return Ok(before);
    }
    update.updated_at = Some(now());
    let ticket = store
        .update_ticket(&before.id, &update)
        .await?
        .ok_or_else(|| {
            AppError::Conflict(
                "the ticket's status changed meanwhile; reload it and try again".into(),
            )
        })?;
    if ticket.status == TicketStatus::Resolved && before.status != TicketStatus::Resolved {
        crate::usage::record(store, &actor.id, usage_kind::TICKET_RESOLVED).await;
    }
    if staff {
        let details = json!({
            "number": ticket.number,
            "status": ticket.status,
            "assignee": ticket.assignee_username,
            "priority": ticket.priority,
            "category": ticket.category,
        });
        crate::audit::record(store, actor, "ticket.update", &ticket.id, details).await?;
    }
    Ok(ticket)
}

/// A reply in a ticket's thread.
#[derive(Debug, Clone)]
pub struct NewComment {
    pub body: String,
    /// Staff only: a note the ticket's owner never sees.
    pub internal: bool,
}

/// Adds `author`'s reply to the ticket `key` (see [`find`]).
///
/// Only staff write internal notes; a closed ticket takes no replies, and
/// one holding `max_comments` takes no more. The owner's reply moves a
/// resolved ticket back to open, as a reply means it is not settled.
pub async fn comment(
    store: &dyn Store,
    author: &User,
    key: &str,
    new: NewComment,
    max_comments: u64,
) -> ApiResult<Comment> {
    let mut v = Validator::new();
    check_text(&mut v, "body", &new.body);
    v.finish()?;
    let ticket = find(store, author, key).await?;
    if new.internal && !author.is_staff() {
        return Err(AppError::Forbidden(
            "only staff can write internal notes".into(),
        ));
    }
    if ticket.status == TicketStatus::Closed {
        return Err(AppError::Conflict(
            "the ticket is closed; open a new one".into(),
        ));
    }
    // Replies and staff notes count apart: what refuses a reply must not
    // tell its owner that notes exist.
    let held = store.list_comments(&ticket.id, true).await?;
    let same_kind = || held.iter().filter(|c| c.internal == new.internal);
    crate::limits::room_for_comment(same_kind().count(), max_comments, new.internal)?;
    let text: usize = same_kind().map(|c| c.body.len()).sum();
    crate::limits::room_in_thread(text, new.body.len(), new.internal)?;
    let at = now();
    let comment = Comment {
        id: new_id(),
        ticket_id: ticket.id.clone(),
        author_id: author.id.clone(),
        author_username: author.username.clone(),
        author_is_staff: author.is_staff(),
        body: new.body,
        internal: new.internal,
        created_at: at,
    };
    store.add_comment(&comment).await?;
    // The owner's reply reopens the ticket only if it is resolved when the
    // reply is stored; otherwise the reply touches nothing but
    // `updated_at`. An internal note leaves even that: the owner must not
    // learn from the ticket's time that staff wrote one.
    let reopened = if ticket.owner_id == author.id {
        let reopen = TicketUpdate {
            status: Some(TicketStatus::Open),
            expected_status: Some(TicketStatus::Resolved),
            resolved_at: Some(None),
            updated_at: Some(at),
            ..Default::default()
        };
        store.update_ticket(&ticket.id, &reopen).await?
    } else {
        None
    };
    if reopened.is_none() && !comment.internal {
        let touch = TicketUpdate {
            updated_at: Some(at),
            ..Default::default()
        };
        store.update_ticket(&ticket.id, &touch).await?;
    }
    Ok(comment)
}

#[cfg(test)]
mod tests {
    use corral_sdk::Role;

    use super::*;
    use crate::accounts::testing;
    use crate::model::AuditQuery;
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

    fn new_ticket() -> NewTicket {
        NewTicket {
            subject: "  Answers stop mid-sentence  ".into(),
            body: "Since this morning every answer ends after a few words.".into(),
            category: TicketCategory::Bug,
            priority: None,
            chat_id: None,
        }
    }

    fn status(to: TicketStatus) -> TicketChanges {
        TicketChanges {
            status: Some(to),
            ..Default::default()
        }
    }

    fn reply(body: &str) -> NewComment {
        NewComment {
            body: body.into(),
            internal: false,
        }
    }

    async fn usage_count(store: &dyn Store, kind: &str) -> u64 {
        let today = now().date_naive();
        let usage = store.usage_daily(today, today, None).await.unwrap();
        usage
            .counts
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.count)
            .sum()
    }

    async fn audited(store: &dyn Store, action: &str) -> u64 {
        let query = AuditQuery {
            actor_id: None,
            action: Some(action.into()),
            limit: 100,
            offset: 0,
        };
        store.list_audit(&query).await.unwrap().total
    }

    #[tokio::test]
    async fn a_ticket_is_checked_before_the_cap_and_counted() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let owner = testing::insert(store, "uma", Role::User).await;
        let bad = NewTicket {
            subject: "hi".into(),
            ..new_ticket()
        };
        let cap = async { Err(AppError::LimitReached("full".into())) };
        let err = open(store, &owner, bad, cap).await.unwrap_err();
        assert_eq!(err.code(), "validation_failed");
        let cap = async { Err(AppError::LimitReached("full".into())) };
        let err = open(store, &owner, new_ticket(), cap).await.unwrap_err();
        assert_eq!(err.code(), "limit_reached");

        let foreign_chat = NewTicket {
            chat_id: Some("someone-elses-chat".into()),
            ..new_ticket()
        };
        let err = open(store, &owner, foreign_chat, async { Ok(()) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), "validation_failed");

        let ticket = open(store, &owner, new_ticket(), async { Ok(()) })
            .await
            .unwrap();
        assert_eq!(ticket.subject, "Answers stop mid-sentence");
        assert_eq!(
            (ticket.status, ticket.priority),
            (Open, TicketPriority::Normal)
        );
        assert_eq!(usage_count(store, usage_kind::TICKET_OPENED).await, 1);
    }

    #[tokio::test]
    async fn someone_elses_ticket_does_not_exist_for_a_user() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let owner = testing::insert(store, "uma", Role::User).await;
        let other = testing::insert(store, "olga", Role::User).await;
        let admin = testing::insert(store, "ada", Role::Admin).await;
        let ticket = open(store, &owner, new_ticket(), async { Ok(()) })
            .await
            .unwrap();
        let number = format!("#{}", ticket.number);
        for key in [ticket.id.as_str(), number.as_str()] {
            let err = find(store, &other, key).await.unwrap_err();
            assert_eq!(err.to_string(), "ticket not found");
            let err = update(store, &other, key, status(Closed))
                .await
                .unwrap_err();
            assert_eq!(err.code(), "not_found");
            let err = comment(store, &other, key, reply("me too"), 100)
                .await
                .unwrap_err();
            assert_eq!(err.code(), "not_found");
            assert_eq!(find(store, &owner, key).await.unwrap().id, ticket.id);
            assert_eq!(find(store, &admin, key).await.unwrap().id, ticket.id);
        }
        let everything = TicketQuery {
            owner_id: Some(owner.id.clone()),
            status: None,
            category: None,
            assignee_id: None,
            search: None,
            limit: 50,
            offset: 0,
        };
        assert_eq!(
            list(store, &other, everything.clone()).await.unwrap().total,
            0
        );
        assert_eq!(list(store, &admin, everything).await.unwrap().total, 1);
    }

    #[tokio::test]
    async fn status_moves_follow_the_rules_and_set_resolved_at() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let owner = testing::insert(store, "uma", Role::User).await;
        let admin = testing::insert(store, "ada", Role::Admin).await;
        let ticket = open(store, &owner, new_ticket(), async { Ok(()) })
            .await
            .unwrap();
        let id = ticket.id.as_str();

        let err = update(store, &owner, id, status(Resolved))
            .await
            .unwrap_err();
        assert_eq!(
            (err.status().as_u16(), err.to_string().as_str()),
            (403, "you can only reopen or close a resolved ticket")
        );
        let priority = TicketChanges {
            priority: Some(TicketPriority::Urgent),
            ..Default::default()
        };
        let err = update(store, &owner, id, priority).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "only staff can change priority, category or assignee"
        );

        let resolved = update(store, &admin, id, status(Resolved)).await.unwrap();
        assert!(resolved.resolved_at.is_some());
        assert_eq!(usage_count(store, usage_kind::TICKET_RESOLVED).await, 1);
        assert_eq!(audited(store, "ticket.update").await, 1);

        let reopened = update(store, &owner, id, status(Open)).await.unwrap();
        assert_eq!((reopened.status, reopened.resolved_at), (Open, None));
        // The owner's own moves are not staff actions.
        assert_eq!(audited(store, "ticket.update").await, 1);

        update(store, &admin, id, status(Resolved)).await.unwrap();
        let closed = update(store, &owner, id, status(Closed)).await.unwrap();
        assert_eq!(closed.status, Closed);
        assert!(closed.resolved_at.is_some(), "closing keeps resolved_at");

        let err = update(store, &admin, id, status(Open)).await.unwrap_err();
        assert_eq!(
            (err.status().as_u16(), err.to_string().as_str()),
            (409, "a Closed ticket cannot move to Open")
        );
        // Asking for what is already there writes nothing.
        let same = update(store, &admin, id, status(Closed)).await.unwrap();
        assert_eq!(same, closed);
    }

    #[tokio::test]
    async fn only_active_staff_take_tickets() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let owner = testing::insert(store, "uma", Role::User).await;
        let admin = testing::insert(store, "ada", Role::Admin).await;
        let ticket = open(store, &owner, new_ticket(), async { Ok(()) })
            .await
            .unwrap();
        let assign = |id: &str| TicketChanges {
            assignee_id: Some(id.into()),
            ..Default::default()
        };
        let err = update(store, &admin, &ticket.id, assign(&owner.id))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "validation_failed");
        let taken = update(store, &admin, &ticket.id, assign(&admin.id))
            .await
            .unwrap();
        assert_eq!(taken.assignee_username.as_deref(), Some("ada"));
        let freed = update(store, &admin, &ticket.id, assign(" "))
            .await
            .unwrap();
        assert_eq!(freed.assignee_id, None);
    }

    #[tokio::test]
    async fn a_thread_holds_at_most_its_bytes_of_text() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let owner = testing::insert(store, "uma", Role::User).await;
        let ticket = open(store, &owner, new_ticket(), async { Ok(()) })
            .await
            .unwrap();
        // 20,000 characters of four bytes each: the most one reply holds.
        let big = "\u{1F600}".repeat(20_000);
        let fit = crate::limits::MAX_THREAD_BYTES / big.len();
        for _ in 0..fit {
            comment(store, &owner, &ticket.id, reply(&big), 500)
                .await
                .unwrap();
        }
        let err = comment(store, &owner, &ticket.id, reply(&big), 500)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "limit_reached", "{err}");
        // What is left still takes a short reply, and staff notes count
        // apart: the owner learns nothing of them from a refusal.
        comment(store, &owner, &ticket.id, reply("one more line"), 500)
            .await
            .unwrap();
        let admin = testing::insert(store, "ada", Role::Admin).await;
        let note = NewComment {
            body: big.clone(),
            internal: true,
        };
        comment(store, &admin, &ticket.id, note, 500).await.unwrap();
        let err = comment(store, &owner, &ticket.id, reply(&big), 500)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("replies"), "{err}");
    }

    #[tokio::test]
    async fn replies_reopen_for_the_owner_and_stop_at_closed() {
        let (_dir, store) = testing::store();
        let store = store.as_ref();
        let owner = testing::insert(store, "uma", Role::User).await;
        let admin = testing::insert(store, "ada", Role::Admin).await;
        let ticket = open(store, &owner, new_ticket(), async { Ok(()) })
            .await
            .unwrap();
        let id = ticket.id.as_str();

        let note = NewComment {
            body: "staff only".into(),
            internal: true,
        };
        let err = comment(store, &owner, id, note.clone(), 100)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "only staff can write internal notes");
        let before = find(store, &owner, id).await.unwrap().updated_at;
        // Times are kept to the millisecond: let one pass.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        comment(store, &admin, id, note, 100).await.unwrap();
        let (after, seen_by_owner) = thread(store, &owner, id).await.unwrap();
        assert!(seen_by_owner.is_empty());
        assert_eq!(
            after.updated_at, before,
            "an internal note moved the ticket's time"
        );
        let (_, seen_by_staff) = thread(store, &admin, id).await.unwrap();
        assert_eq!(seen_by_staff.len(), 1);

        update(store, &admin, id, status(Resolved)).await.unwrap();
        comment(store, &admin, id, reply("fixed, I think"), 100)
            .await
            .unwrap();
        assert_eq!(find(store, &owner, id).await.unwrap().status, Resolved);
        comment(store, &owner, id, reply("still broken"), 100)
            .await
            .unwrap();
        let reopened = find(store, &owner, id).await.unwrap();
        assert_eq!((reopened.status, reopened.resolved_at), (Open, None));

        update(store, &admin, id, status(Closed)).await.unwrap();
        let err = comment(store, &owner, id, reply("hello?"), 100)
            .await
            .unwrap_err();
        assert_eq!(
            (err.status().as_u16(), err.to_string().as_str()),
            (409, "the ticket is closed; open a new one")
        );
        let err = comment(store, &owner, id, reply("   "), 100)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "validation_failed");
    }
}
