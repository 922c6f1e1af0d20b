//! Caps on what one account may hold (chats, open tickets, API keys) and
//! on how long one chat or ticket may grow, so that a single account cannot
//! fill the store, nor make one record too big to read back. The counts are read before
//! the record is written: requests racing each other may pass the cap by
//! the few that were in flight together, which a cap against filling the
//! store tolerates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{ApiResult, AppError};
use crate::model::{ChatQuery, TicketQuery, TicketStatus};
use crate::state::AppState;
use crate::time::now;

/// Refuses a new chat when `user_id` holds `max_chats_per_user` already.
pub async fn room_for_chat(state: &AppState, user_id: &str) -> ApiResult<()> {
    let cap = state.config.max_chats_per_user;
    let query = ChatQuery {
        search: None,
        pinned: None,
        limit: 1,
        offset: 0,
    };
    let held = state.store.list_chats(user_id, &query, now()).await?.total;
    within(
        held,
        cap,
        format!("an account may hold at most {cap} chats; delete one first"),
    )
}

/// Refuses a new ticket when `user_id` has `max_open_tickets_per_user`
/// tickets that are neither resolved nor closed.
pub async fn room_for_ticket(state: &AppState, user_id: &str) -> ApiResult<()> {
    let cap = state.config.max_open_tickets_per_user;
    let mut open = 0;
    for status in [TicketStatus::Open, TicketStatus::InProgress] {
        let query = TicketQuery {
            owner_id: Some(user_id.to_owned()),
            status: Some(status),
            category: None,
            assignee_id: None,
            search: None,
            limit: 1,
            offset: 0,
        };
        open += state.store.list_tickets(&query).await?.total;
    }
    within(
        open,
        cap,
        format!(
            "an account may have at most {cap} open tickets; wait for one to be resolved or \
             close one first"
        ),
    )
}

/// Refuses a new API key when `user_id` holds `max_api_keys_per_user`.
pub async fn room_for_api_key(state: &AppState, user_id: &str) -> ApiResult<()> {
    let cap = state.config.max_api_keys_per_user;
    let held = state.store.list_api_keys(user_id).await?.len() as u64;
    within(
        held,
        cap,
        format!("an account may hold at most {cap} API keys; revoke one first"),
    )
}

/// Refuses `adding` messages to a chat that holds `held` when that would
/// take it past `max_messages_per_chat`.
pub fn room_for_messages(state: &AppState, held: usize, adding: usize) -> ApiResult<()> {
    let cap = state.config.max_messages_per_chat;
    let after = u64::try_from(held + adding).unwrap_or(u64::MAX);
    within(
        after.saturating_sub(1),
        cap,
        format!("a chat holds at most {cap} messages; start a new chat to go on"),
    )
}

/// The most text one chat's messages hold together: a chat is read whole
/// to show, export or continue it.
pub const MAX_CHAT_BYTES: usize = 8 * 1024 * 1024;

/// Refuses a message of `adding` bytes to a chat whose messages hold
/// `held`. (An answer may take a chat past the cap by its `max_tokens`;
/// the next message is then refused.)
pub fn room_in_chat(held: usize, adding: usize) -> ApiResult<()> {
    if held.saturating_add(adding) > MAX_CHAT_BYTES {
        return Err(AppError::LimitReached(format!(
            "a chat holds at most {} MiB of text; start a new chat to go on",
            MAX_CHAT_BYTES >> 20
        )));
    }
    Ok(())
}

/// Refuses a reply (or, `internal`, a staff note) to a ticket that holds
/// `held` of them and `cap` at most. Replies and notes count apart, so
/// that a refused reply says nothing of the notes.
pub fn room_for_comment(held: usize, cap: u64, internal: bool) -> ApiResult<()> {
    let what = if internal { "staff notes" } else { "replies" };
    within(
        u64::try_from(held).unwrap_or(u64::MAX),
        cap,
        format!("a ticket holds at most {cap} {what}; open a new ticket to go on"),
    )
}

/// The most text one ticket's replies hold together, and its staff notes
/// apart: a thread is read whole on every view and reply. Notes count
/// apart so that a refused reply says nothing of them.
pub const MAX_THREAD_BYTES: usize = 2 * 1024 * 1024;

/// Refuses a reply (or, `internal`, a staff note) of `adding` bytes to a
/// ticket whose replies (or notes) hold `held`.
pub fn room_in_thread(held: usize, adding: usize, internal: bool) -> ApiResult<()> {
    if held.saturating_add(adding) > MAX_THREAD_BYTES {
        let what = if internal { "staff notes" } else { "replies" };
        return Err(AppError::LimitReached(format!(
            "a ticket's {what} hold at most {} MiB of text; open a new ticket to go on",
            MAX_THREAD_BYTES >> 20
        )));
    }
    Ok(())
}

/// What accounts have under way at once (plugin route requests), each
/// counted until its [`Slot`] is dropped.
#[derive(Default)]
pub struct PerAccount {
    held: Mutex<HashMap<String, usize>>,
}

impl PerAccount {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one more of `user_id`'s requests; 429 `busy` when the
    /// account has `cap` under way.
    pub fn enter(self: &Arc<Self>, user_id: &str, cap: usize) -> ApiResult<Slot> {
        let mut held = self.lock();
        let n = held.entry(user_id.to_owned()).or_default();
        if *n >= cap {
            return Err(AppError::Busy {
                retry_after: 1,
                message: format!(
                    "an account may have {cap} plugin requests under way at once; wait for one to end"
                ),
            });
        }
        *n += 1;
        Ok(Slot {
            of: self.clone(),
            user_id: user_id.to_owned(),
        })
    }

    /// Requests `user_id` has under way.
    pub fn held(&self, user_id: &str) -> usize {
        self.lock().get(user_id).copied().unwrap_or(0)
    }
}

/// One request under way, counted until dropped.
pub struct Slot {
    of: Arc<PerAccount>,
    user_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.of.lock();
        if let Some(n) = held.get_mut(&self.user_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.user_id);
            }
        }
    }
}

fn within(held: u64, cap: u64, message: String) -> ApiResult<()> {
    if held >= cap {
        Err(AppError::LimitReached(message))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_has_its_cap_of_requests_under_way() {
        let under_way = Arc::new(PerAccount::default());
        let held: Vec<_> = (0..2)
            .map(|_| under_way.enter("ada", 2).expect("room"))
            .collect();
        let err = under_way.enter("ada", 2).err().expect("full");
        assert_eq!((err.status().as_u16(), err.code()), (429, "busy"));
        let bob = under_way.enter("bob", 2).expect("another account has room");
        drop(held);
        assert_eq!(under_way.held("ada"), 0);
        under_way.enter("ada", 2).expect("room again");
        drop(bob);
        assert!(under_way.lock().is_empty(), "an idle account is forgotten");
    }

    #[test]
    fn the_cap_itself_is_refused() {
        assert!(within(9, 10, String::new()).is_ok());
        let err = within(10, 10, "full".into()).unwrap_err();
        assert_eq!(err.code(), "limit_reached");
        assert_eq!(err.status().as_u16(), 409);
        assert!(within(0, 0, String::new()).is_err());
    }
}
