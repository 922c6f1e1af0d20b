//! Daily token allowances. Staff set a limit per role and, above it, per
//! user; prompt and completion tokens of every generation (chat answers and
//! the OpenAI-compatible API) count against the day (UTC) they ran on. A
//! user without a limit is unlimited.
//!
//! A generation is counted once it has ended; until then it holds a
//! [`Reservation`] of what it may still use (its prompt, estimated, and its
//! `max_tokens`), which requests admitted meanwhile see as spent. So
//! requests sent side by side cannot each spend the same allowance.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use chrono::{DateTime, Days, Utc};
use corral_sdk::backend::SamplingParams;
use corral_sdk::Role;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::error::{ApiResult, AppError, Json, Validator};
use crate::model::User;
use crate::policy::Caller;
use crate::state::AppState;
use crate::time::{now, start_of};

/// Settings key of the stored [`Quotas`].
const QUOTAS: &str = "quotas";

/// Most user entries one quota table holds.
const MAX_USER_QUOTAS: usize = 10_000;

/// Tokens per day by role; absent means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleQuotas {
    #[schema(example = 200000)]
    pub user: Option<u64>,
    pub admin: Option<u64>,
    pub technician: Option<u64>,
}

/// Daily token allowances.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    #[serde(default)]
    pub roles: RoleQuotas,
    /// By user id; wins over the user's role. 0 blocks generation.
    #[serde(default)]
    pub users: BTreeMap<String, u64>,
}

impl Quotas {
    /// The daily limit that applies to `user`, if any.
    pub fn limit_for(&self, user: &User) -> Option<u64> {
        self.users.get(&user.id).copied().or(match user.role {
            Role::User => self.roles.user,
            Role::Admin => self.roles.admin,
            Role::Technician => self.roles.technician,
        })
    }
}

async fn load(state: &AppState) -> ApiResult<Quotas> {
    Ok(match state.store.get_setting(QUOTAS).await? {
        Some(value) => serde_json::from_value(value).map_err(|e| {
            AppError::Internal(anyhow::anyhow!("the stored quotas are unreadable: {e}"))
        })?,
        None => Quotas::default(),
    })
}

/// Where one user stands today.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Allowance {
    /// Tokens per day; absent when unlimited.
    pub limit: Option<u64>,
    /// Prompt and completion tokens used today (UTC).
    pub used: u64,
    /// What is left today; absent when unlimited.
    pub remaining: Option<u64>,
    /// When the count starts again (next midnight UTC).
    #[serde(with = "crate::time::serde_millis")]
    #[schema(value_type = String, format = DateTime)]
    pub resets_at: DateTime<Utc>,
}

/// `user`'s allowance today.
pub async fn allowance(state: &AppState, user: &User) -> ApiResult<Allowance> {
    let limit = load(state).await?.limit_for(user);
    let today = now().date_naive();
    let resets_at = start_of(today.checked_add_days(Days::new(1)).unwrap_or(today));
    let used = state
        .store
        .generation_totals(today, today, Some(&user.id))
        .await?
        .iter()
        .map(|t| t.prompt_tokens + t.completion_tokens)
        .sum();
    Ok(Allowance {
        limit,
        used,
        remaining: limit.map(|l| l.saturating_sub(used)),
        resets_at,
    })
}

/// The error for an allowance with nothing left; `holding` of its `used`
/// is held by generations still under way.
fn refuse_if_spent(allowance: &Allowance, holding: u64) -> ApiResult<()> {
    match allowance.limit {
        Some(limit) if allowance.used >= limit => {
            let under_way = match holding {
                0 => String::new(),
                n => format!(", {n} of them held by generations still under way"),
            };
            Err(exceeded(
                allowance,
                format!(
                    "the daily allowance of {limit} tokens is used up ({} used{under_way}); it \
                     renews at 00:00 UTC",
                    allowance.used
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Refuses input of at least `input` tokens that does not fit in what is
/// left of the allowance, with room for `room` tokens written after it.
fn refuse_if_too_long(allowance: &Allowance, input: u64, room: u64) -> ApiResult<()> {
    match (allowance.limit, allowance.remaining) {
        (Some(limit), Some(left)) if input.saturating_add(room) > left => Err(exceeded(
            allowance,
            format!(
                "the input (at least {input} tokens) does not fit in the {left} tokens left of \
                 the daily allowance of {limit}; shorten it, or wait until it renews at 00:00 UTC"
            ),
        )),
        _ => Ok(()),
    }
}

fn exceeded(allowance: &Allowance, message: String) -> AppError {
    let wait = (allowance.resets_at - Utc::now()).num_seconds().max(1);
    AppError::QuotaExceeded {
        retry_after: u64::try_from(wait).unwrap_or(1),
        message,
    }
}

/// Tokens held by the generations of each user that were admitted on this
/// host and are not counted yet. (Hosts that share a store each hold their
/// own.)
#[derive(Clone, Default)]
pub struct Reservations {
    users: Arc<Mutex<HashMap<String, Arc<Held>>>>,
}

/// One user's holds. `admitting` makes that user's admissions one at a
/// time, so each sees the holds of those before it.
#[derive(Default)]
struct Held {
    admitting: tokio::sync::Mutex<()>,
    tokens: Mutex<u64>,
}

impl Reservations {
    fn held(&self, user_id: &str) -> Arc<Held> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.entry(user_id.to_owned()).or_default().clone()
    }

    fn release(&self, user_id: &str, tokens: u64) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let Some(held) = users.get(user_id) else {
            return;
        };
        let left = {
            let mut held_tokens = held.tokens.lock().unwrap_or_else(|e| e.into_inner());
            *held_tokens = held_tokens.saturating_sub(tokens);
            *held_tokens
        };
        // Nobody is admitting and nothing is held: forget the user.
        if left == 0 && Arc::strong_count(held) == 1 {
            users.remove(user_id);
        }
    }

    /// Users with holds, for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.users.lock().unwrap().len()
    }
}

/// What one admitted generation may still use of its user's allowance
/// until it is counted; dropping it gives that back. Drop it only after
/// the generation is recorded, so that no admission in between misses it.
pub struct Reservation {
    reservations: Reservations,
    user_id: String,
    tokens: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // With nothing held too: that forgets a user whose admission
        // held nothing or was refused.
        self.reservations.release(&self.user_id, self.tokens);
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("tokens", &self.tokens)
            .finish()
    }
}

/// A rough count of a prompt's tokens from its length in bytes (about four
/// bytes a token in English text; more tokens than this in most other
/// text), for holding a share of the allowance while it runs.
pub fn estimate_tokens(bytes: usize) -> u64 {
    u64::try_from(bytes.div_ceil(4)).unwrap_or(u64::MAX)
}

/// The fewest tokens text of `bytes` takes: hardly any text takes more than
/// eight bytes a token. Input refused for this many surely does not fit.
pub fn surely_at_least(bytes: usize) -> u64 {
    u64::try_from(bytes / 8).unwrap_or(u64::MAX)
}

/// Refuses a generation when `user` has used up today's allowance, counting
/// what the user's other generations under way may still use, or when its
/// prompt surely leaves no room for an answer (`at_least` tokens, see
/// [`surely_at_least`]); otherwise caps its `max_tokens` at what is left
/// after that, so one long request cannot run far past the limit, and holds
/// `prompt_tokens` (an estimate) plus that `max_tokens` until the returned
/// reservation is dropped.
pub async fn admit(
    state: &AppState,
    user: &User,
    sampling: &mut SamplingParams,
    prompt_tokens: u64,
    at_least: u64,
) -> ApiResult<Reservation> {
    reserve(state, user, prompt_tokens, at_least, Some(sampling)).await
}

/// Like [`admit`], for work that reads its input of `bytes` and writes
/// nothing (an embedding run): refuses input that surely does not fit in
/// what is left, and holds its estimate.
pub async fn hold_input(state: &AppState, user: &User, bytes: usize) -> ApiResult<Reservation> {
    reserve(
        state,
        user,
        estimate_tokens(bytes),
        surely_at_least(bytes),
        None,
    )
    .await
}

async fn reserve(
    state: &AppState,
    user: &User,
    prompt_tokens: u64,
    at_least: u64,
    sampling: Option<&mut SamplingParams>,
) -> ApiResult<Reservation> {
    let reservations = &state.quota_holds;
    // Made first, so that it is dropped last on every way out: its drop
    // forgets the user when nothing else is held.
    let mut reservation = Reservation {
        reservations: reservations.clone(),
        user_id: user.id.clone(),
        tokens: 0,
    };
    let held = reservations.held(&user.id);
    let one_at_a_time = held.admitting.lock().await;
    // Holds before counts: a generation that ends meanwhile is recorded
    // before it lets go of its hold, so it is seen in one or the other.
    let holding = *held.tokens.lock().unwrap_or_else(|e| e.into_inner());
    let mut allowance = allowance(state, user).await?;
    let unlimited = allowance.limit.is_none();
    allowance.used = allowance.used.saturating_add(holding);
    allowance.remaining = allowance
        .limit
        .map(|limit| limit.saturating_sub(allowance.used));
    refuse_if_spent(&allowance, holding)?;
    // A generation needs room for one token of answer after its prompt.
    let room = u64::from(sampling.is_some());
    refuse_if_too_long(&allowance, at_least, room)?;
    let mut tokens = prompt_tokens;
    if let Some(sampling) = sampling {
        cap(
            sampling,
            allowance
                .remaining
                .map(|left| left.saturating_sub(at_least)),
        );
        tokens = tokens.saturating_add(u64::from(sampling.max_tokens));
    }
    if unlimited {
        tokens = 0;
    }
    *held.tokens.lock().unwrap_or_else(|e| e.into_inner()) += tokens;
    reservation.tokens = tokens;
    drop(one_at_a_time);
    drop(held);
    Ok(reservation)
}

fn cap(sampling: &mut SamplingParams, remaining: Option<u64>) {
    if let Some(remaining) = remaining {
        let remaining = u32::try_from(remaining).unwrap_or(u32::MAX).max(1);
        sampling.max_tokens = sampling.max_tokens.min(remaining);
    }
}

/// Token quotas per role and per user.
#[utoipa::path(get, path = "/api/quotas", tag = "admin",
    responses((status = 200, description = "The quotas", body = Quotas)))]
pub async fn get_quotas(State(state): State<AppState>) -> ApiResult<Json<Quotas>> {
    Ok(Json(load(&state).await?))
}

/// Replace the token quotas. Users named must exist.
#[utoipa::path(put, path = "/api/quotas", tag = "admin",
    request_body = Quotas,
    responses(
        (status = 200, description = "The quotas now", body = Quotas),
        (status = 403, description = "Only technicians can set the quota of a technician or of the technician role", body = corral_sdk::ErrorBody),
    ))]
pub async fn put_quotas(
    State(state): State<AppState>,
    caller: Caller,
    Json(quotas): Json<Quotas>,
) -> ApiResult<Json<Quotas>> {
    let mut v = Validator::new();
    v.check(
        quotas.users.len() <= MAX_USER_QUOTAS,
        "users",
        format!("at most {MAX_USER_QUOTAS} entries"),
    );
    v.finish()?;
    // The check below compares with the quotas as stored; without the lock
    // a concurrent edit could land between it and the write and be undone
    // by someone not allowed to change it. Role changes take the same lock.
    let _guard = state.staff_changes.lock().await;
    for id in quotas.users.keys() {
        if state.store.get_user(id).await?.is_none() {
            return Err(AppError::field(
                "users",
                format!("no user has the id `{id}`"),
            ));
        }
    }
    let before = load(&state).await?;
    ensure_may_change(&state, &caller, &before, &quotas).await?;
    let value = serde_json::to_value(&quotas)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("cannot encode the quotas: {e}")))?;
    state.store.put_setting(QUOTAS, &value).await?;
    crate::audit::record(
        state.store.as_ref(),
        &caller.user,
        "quotas.update",
        QUOTAS,
        json!({ "from": before, "to": quotas }),
    )
    .await?;
    Ok(Json(quotas))
}

/// Staff change the quotas only of accounts and roles they may act on
/// (see [`crate::accounts::may_manage`]).
async fn ensure_may_change(
    state: &AppState,
    caller: &Caller,
    before: &Quotas,
    after: &Quotas,
) -> ApiResult<()> {
    let (was, is) = (&before.roles, &after.roles);
    for (role, changed) in [
        (Role::User, was.user != is.user),
        (Role::Admin, was.admin != is.admin),
        (Role::Technician, was.technician != is.technician),
    ] {
        if changed {
            crate::accounts::ensure_may_manage_role(&caller.user, role)?;
        }
    }
    let changed = |a: &Quotas, b: &Quotas| -> Vec<String> {
        a.users
            .iter()
            .filter(|(id, limit)| b.users.get(*id) != Some(*limit))
            .map(|(id, _)| id.clone())
            .collect()
    };
    for id in changed(before, after)
        .into_iter()
        .chain(changed(after, before))
    {
        if let Some(user) = state.store.get_user(&id).await? {
            crate::accounts::ensure_may_manage(&caller.user, &user)?;
        }
    }
    Ok(())
}

/// The caller's token allowance today.
#[utoipa::path(get, path = "/api/me/quota", tag = "me",
    responses((status = 200, description = "Limit, use and what is left", body = Allowance)))]
pub async fn my_quota(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Allowance>> {
    Ok(Json(allowance(&state, &caller.user).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_add_up_per_user_and_are_forgotten_once_given_back() {
        let holds = Reservations::default();
        let hold = |user: &str, tokens: u64| {
            *holds.held(user).tokens.lock().unwrap() += tokens;
            Reservation {
                reservations: holds.clone(),
                user_id: user.into(),
                tokens,
            }
        };
        let a = hold("ada", 300);
        let b = hold("ada", 50);
        let c = hold("bob", 7);
        assert_eq!(*holds.held("ada").tokens.lock().unwrap(), 350);
        drop(a);
        assert_eq!(*holds.held("ada").tokens.lock().unwrap(), 50);
        drop((b, c));
        assert_eq!(holds.len(), 0, "users with nothing held are forgotten");
        // An admission that held nothing (an unlimited user, a refusal).
        drop(hold("eve", 0));
        assert_eq!(holds.len(), 0);
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(9), 3);
    }

    fn user(id: &str, role: Role) -> User {
        User {
            id: id.into(),
            username: id.into(),
            display_name: id.into(),
            role,
            disabled: false,
            password_hash: String::new(),
            token_version: 0,
            created_at: now(),
            updated_at: now(),
            last_login_at: None,
        }
    }

    #[test]
    fn a_user_entry_wins_over_the_role() {
        let quotas = Quotas {
            roles: RoleQuotas {
                user: Some(100),
                admin: None,
                technician: Some(5),
            },
            users: BTreeMap::from([("u2".to_string(), 0), ("a1".to_string(), 7)]),
        };
        assert_eq!(quotas.limit_for(&user("u1", Role::User)), Some(100));
        assert_eq!(quotas.limit_for(&user("u2", Role::User)), Some(0));
        assert_eq!(quotas.limit_for(&user("a1", Role::Admin)), Some(7));
        assert_eq!(quotas.limit_for(&user("a2", Role::Admin)), None);
        assert_eq!(quotas.limit_for(&user("t1", Role::Technician)), Some(5));
    }

    #[test]
    fn input_must_fit_in_what_is_left() {
        let left = |remaining: Option<u64>| Allowance {
            limit: remaining.map(|_| 1000),
            used: 1000 - remaining.unwrap_or(0),
            remaining,
            resets_at: now() + chrono::TimeDelta::hours(1),
        };
        // A generation needs room for one token after its prompt.
        assert!(refuse_if_too_long(&left(Some(10)), 9, 1).is_ok());
        let err = refuse_if_too_long(&left(Some(10)), 10, 1).unwrap_err();
        assert_eq!((err.status().as_u16(), err.code()), (429, "quota_exceeded"));
        assert!(err.to_string().contains("at least 10 tokens"), "{err}");
        // An embedding run writes nothing.
        assert!(refuse_if_too_long(&left(Some(10)), 10, 0).is_ok());
        assert!(refuse_if_too_long(&left(Some(10)), 11, 0).is_err());
        // Unlimited.
        assert!(refuse_if_too_long(&left(None), u64::MAX, 1).is_ok());
    }

    #[test]
    fn max_tokens_is_capped_at_what_is_left() {
        let mut sampling = SamplingParams {
            max_tokens: 4096,
            ..SamplingParams::default()
        };
        cap(&mut sampling, None);
        assert_eq!(sampling.max_tokens, 4096);
        cap(&mut sampling, Some(50));
        assert_eq!(sampling.max_tokens, 50);
        cap(&mut sampling, Some(1_000_000));
        assert_eq!(sampling.max_tokens, 50);
        cap(&mut sampling, Some(u64::MAX));
        assert_eq!(sampling.max_tokens, 50);
    }
}
