//! Usage statistics: per-day counts over a range of days, for the whole
//! platform (staff) and for the caller.

use std::collections::BTreeMap;

use axum::extract::State;
use chrono::{Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiResult, Json, Query, Validator};
use crate::model::{usage_kind, GenerationTotals, UsageDaily};
use crate::policy::Caller;
use crate::state::AppState;

/// Longest range one request may ask for.
const MAX_DAYS: u64 = 366;

/// A range of days (UTC), both ends included.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// First day, `YYYY-MM-DD` (default: 29 days before `to`).
    #[param(value_type = Option<String>, format = Date, example = "2026-01-01")]
    pub from: Option<NaiveDate>,
    /// Last day, `YYYY-MM-DD` (default: today).
    #[param(value_type = Option<String>, format = Date, example = "2026-01-30")]
    pub to: Option<NaiveDate>,
}

fn range(params: &RangeParams) -> ApiResult<(NaiveDate, NaiveDate)> {
    let to = params.to.unwrap_or_else(|| Utc::now().date_naive());
    let from = params
        .from
        .unwrap_or_else(|| to.checked_sub_days(Days::new(29)).unwrap_or(to));
    let span = (to - from).num_days();
    Validator::new()
        .check(span >= 0, "from", "must not be after `to`")
        .check(
            span < MAX_DAYS as i64,
            "from",
            format!("the range may cover at most {MAX_DAYS} days"),
        )
        .finish()?;
    Ok((from, to))
}

/// Platform activity on one day.
#[derive(Debug, Default, Clone, PartialEq, Serialize, ToSchema)]
pub struct PlatformDay {
    #[schema(value_type = String, format = Date, example = "2026-01-15")]
    pub day: NaiveDate,
    pub new_users: u64,
    /// Accounts that signed in or did anything that day.
    pub active_users: u64,
    pub chats: u64,
    pub messages: u64,
    pub tickets_opened: u64,
    pub tickets_resolved: u64,
}

/// Generations of one model over one day, or over the whole range.
#[derive(Debug, Default, Clone, PartialEq, Serialize, ToSchema)]
pub struct ModelUsage {
    /// The day; absent in the totals over the range.
    #[schema(value_type = Option<String>, format = Date, example = "2026-01-15")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<NaiveDate>,
    #[schema(example = "gemma-3-270m")]
    pub model: String,
    /// Chat answers and API completions, stopped and failed ones included.
    pub generations: u64,
    pub failed: u64,
    pub prompt_tokens: u64,
    /// Prompt tokens taken from the model's cache of an earlier request
    /// instead of being read again (part of `prompt_tokens`).
    pub cached_prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Mean time to first token, over the generations that had one.
    pub avg_time_to_first_token_ms: Option<f64>,
    /// Completion tokens over the time spent generating.
    pub tokens_per_second: Option<f64>,
}

/// Per-day rows and per-model totals from the store's sums.
fn model_usage(rows: &[GenerationTotals]) -> (Vec<ModelUsage>, Vec<ModelUsage>) {
    let days = rows.iter().map(|t| usage_of(Some(t.day), t)).collect();
    let mut sums: BTreeMap<&str, GenerationTotals> = BTreeMap::new();
    for t in rows {
        let sum = sums.entry(&t.model).or_insert_with(|| GenerationTotals {
            model: t.model.clone(),
            ..GenerationTotals::default()
        });
        sum.generations += t.generations;
        sum.failed += t.failed;
        sum.prompt_tokens += t.prompt_tokens;
        sum.cached_prompt_tokens += t.cached_prompt_tokens;
        sum.completion_tokens += t.completion_tokens;
        sum.ttft_sum_ms += t.ttft_sum_ms;
        sum.ttft_count += t.ttft_count;
        sum.duration_ms += t.duration_ms;
    }
    let totals = sums.values().map(|t| usage_of(None, t)).collect();
    (days, totals)
}

fn usage_of(day: Option<NaiveDate>, t: &GenerationTotals) -> ModelUsage {
    ModelUsage {
        day,
        model: t.model.clone(),
        generations: t.generations,
        failed: t.failed,
        prompt_tokens: t.prompt_tokens,
        cached_prompt_tokens: t.cached_prompt_tokens,
        completion_tokens: t.completion_tokens,
        avg_time_to_first_token_ms: (t.ttft_count > 0)
            .then(|| t.ttft_sum_ms as f64 / t.ttft_count as f64),
        tokens_per_second: (t.duration_ms > 0)
            .then(|| t.completion_tokens as f64 * 1000.0 / t.duration_ms as f64),
    }
}

/// Sums of a range (active users are not summed: one person on many days
/// is still one person).
#[derive(Debug, Default, Clone, PartialEq, Serialize, ToSchema)]
pub struct PlatformTotals {
    pub new_users: u64,
    pub chats: u64,
    pub messages: u64,
    pub tickets_opened: u64,
    pub tickets_resolved: u64,
}

/// Platform statistics over a range of days.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlatformStats {
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
    /// Every day of the range, including days with nothing.
    pub days: Vec<PlatformDay>,
    pub totals: PlatformTotals,
    /// Accounts that exist now.
    pub users_total: u64,
    /// Tokens and latency per model and day (days with generations only).
    pub model_days: Vec<ModelUsage>,
    /// The same per model over the whole range.
    pub models: Vec<ModelUsage>,
}

/// Every day of `from..=to` with its counts, zero where nothing happened.
fn fill_days(from: NaiveDate, to: NaiveDate, daily: &UsageDaily) -> Vec<PlatformDay> {
    let mut days: BTreeMap<NaiveDate, PlatformDay> = from
        .iter_days()
        .take_while(|d| *d <= to)
        .map(|day| {
            (
                day,
                PlatformDay {
                    day,
                    ..PlatformDay::default()
                },
            )
        })
        .collect();
    for c in &daily.counts {
        let Some(day) = days.get_mut(&c.day) else {
            continue;
        };
        let slot = match c.kind.as_str() {
            usage_kind::USER_REGISTERED => &mut day.new_users,
            usage_kind::CHAT_CREATED => &mut day.chats,
            usage_kind::MESSAGE_CREATED => &mut day.messages,
            usage_kind::TICKET_OPENED => &mut day.tickets_opened,
            usage_kind::TICKET_RESOLVED => &mut day.tickets_resolved,
            _ => continue,
        };
        *slot += c.count;
    }
    for (d, n) in &daily.active_users {
        if let Some(day) = days.get_mut(d) {
            day.active_users = *n;
        }
    }
    days.into_values().collect()
}

fn totals(days: &[PlatformDay]) -> PlatformTotals {
    days.iter().fold(PlatformTotals::default(), |mut t, d| {
        t.new_users += d.new_users;
        t.chats += d.chats;
        t.messages += d.messages;
        t.tickets_opened += d.tickets_opened;
        t.tickets_resolved += d.tickets_resolved;
        t
    })
}

/// Platform activity per day.
#[utoipa::path(get, path = "/api/stats", tag = "stats",
    params(RangeParams),
    responses((status = 200, description = "Per-day counts", body = PlatformStats)))]
pub async fn platform(
    State(state): State<AppState>,
    Query(params): Query<RangeParams>,
) -> ApiResult<Json<PlatformStats>> {
    let (from, to) = range(&params)?;
    let daily = state.store.usage_daily(from, to, None).await?;
    let days = fill_days(from, to, &daily);
    let (model_days, models) = model_usage(&state.store.generation_totals(from, to, None).await?);
    Ok(Json(PlatformStats {
        from,
        to,
        totals: totals(&days),
        days,
        users_total: state.store.count_users().await?,
        model_days,
        models,
    }))
}

/// The caller's activity on one day.
#[derive(Debug, Default, Clone, PartialEq, Serialize, ToSchema)]
pub struct MyDay {
    #[schema(value_type = String, format = Date, example = "2026-01-15")]
    pub day: NaiveDate,
    pub chats: u64,
    pub messages: u64,
    pub tickets_opened: u64,
}

/// The caller's statistics over a range of days.
#[derive(Debug, Serialize, ToSchema)]
pub struct MyStats {
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
    pub days: Vec<MyDay>,
    pub chats: u64,
    pub messages: u64,
    pub tickets_opened: u64,
    /// The caller's tokens and latency per model and day.
    pub model_days: Vec<ModelUsage>,
    /// The same per model over the whole range.
    pub models: Vec<ModelUsage>,
}

/// The caller's own activity per day.
#[utoipa::path(get, path = "/api/me/stats", tag = "me",
    params(RangeParams),
    responses((status = 200, description = "Per-day counts", body = MyStats)))]
pub async fn mine(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<RangeParams>,
) -> ApiResult<Json<MyStats>> {
    let (from, to) = range(&params)?;
    let daily = state.store.usage_daily(from, to, Some(caller.id())).await?;
    let days: Vec<MyDay> = fill_days(from, to, &daily)
        .into_iter()
        .map(|d| MyDay {
            day: d.day,
            chats: d.chats,
            messages: d.messages,
            tickets_opened: d.tickets_opened,
        })
        .collect();
    let (model_days, models) = model_usage(
        &state
            .store
            .generation_totals(from, to, Some(caller.id()))
            .await?,
    );
    Ok(Json(MyStats {
        model_days,
        models,
        from,
        to,
        chats: days.iter().map(|d| d.chats).sum(),
        messages: days.iter().map(|d| d.messages).sum(),
        tickets_opened: days.iter().map(|d| d.tickets_opened).sum(),
        days,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DailyCount;

    #[test]
    fn every_day_of_the_range_appears_once() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let daily = UsageDaily {
            counts: vec![
                DailyCount {
                    day: d("2026-01-02"),
                    kind: "chat.created".into(),
                    count: 3,
                },
                DailyCount {
                    day: d("2026-01-09"),
                    kind: "chat.created".into(),
                    count: 9,
                },
            ],
            active_users: vec![(d("2026-01-02"), 2)],
        };
        let days = fill_days(d("2026-01-01"), d("2026-01-03"), &daily);
        assert_eq!(days.len(), 3);
        assert_eq!(days[1].chats, 3);
        assert_eq!(days[1].active_users, 2);
        assert_eq!(totals(&days).chats, 3);
    }

    #[test]
    fn model_usage_sums_days_per_model() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let row =
            |day: &str, model: &str, completion: u64, ttft: (u64, u64), ms: u64| GenerationTotals {
                day: d(day),
                model: model.into(),
                generations: 2,
                failed: 1,
                prompt_tokens: 10,
                cached_prompt_tokens: 4,
                completion_tokens: completion,
                ttft_sum_ms: ttft.0,
                ttft_count: ttft.1,
                duration_ms: ms,
            };
        let rows = [
            row("2026-01-01", "a", 100, (300, 2), 2_000),
            row("2026-01-01", "b", 0, (0, 0), 0),
            row("2026-01-02", "a", 50, (100, 1), 3_000),
        ];
        let (days, totals) = model_usage(&rows);
        assert_eq!(days.len(), 3);
        assert_eq!(days[0].tokens_per_second, Some(50.0));
        assert_eq!(days[0].avg_time_to_first_token_ms, Some(150.0));
        assert_eq!(days[1].avg_time_to_first_token_ms, None);
        assert_eq!(days[1].tokens_per_second, None);
        assert_eq!(totals.len(), 2);
        let a = &totals[0];
        assert_eq!((a.model.as_str(), a.day), ("a", None));
        assert_eq!((a.generations, a.failed, a.completion_tokens), (4, 2, 150));
        assert_eq!((a.prompt_tokens, a.cached_prompt_tokens), (20, 8));
        assert_eq!(days[2].cached_prompt_tokens, 4);
        assert_eq!(a.tokens_per_second, Some(30.0));
        assert_eq!(a.avg_time_to_first_token_ms, Some(400.0 / 3.0));
    }

    #[test]
    fn ranges_are_checked() {
        let d = |s: &str| Some(s.parse::<NaiveDate>().unwrap());
        assert!(range(&RangeParams {
            from: d("2026-02-01"),
            to: d("2026-01-01")
        })
        .is_err());
        assert!(range(&RangeParams {
            from: d("2024-01-01"),
            to: d("2026-01-01")
        })
        .is_err());
        assert!(range(&RangeParams {
            from: d("2026-01-01"),
            to: d("2026-01-01")
        })
        .is_ok());
    }
}
