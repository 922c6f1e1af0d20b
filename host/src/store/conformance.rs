//! The behaviour every [`super::Store`] must show.
//!
//! Each case is a `pub async fn` that takes a fresh, empty store and panics
//! with a message naming what went wrong. [`run_all`] runs every case of
//! [`CASES`] on its own fresh store and reports all failures at the end; the
//! integration tests `store_sqlite` and `store_mongo` call it for the two
//! implementations.
//!
//! All instants are fixed (built from text) so results are deterministic.
//! They lie in the future of any plausible wall clock, so a store that also
//! expires records by wall-clock time (a TTL index) cannot remove them while
//! a case runs; every expiry decision in the contract is taken against the
//! `now` passed in.
//!
//! Set `CORRAL_CONFORMANCE_CASES` to a comma-separated list of substrings to
//! run only the matching cases.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use corral_sdk::Role;
use futures::future::BoxFuture;
use serde_json::json;

use super::{
    ChatUpdate, MessageUpdate, PluginUpdate, Store, StoreError, StoreResult, TicketUpdate,
    UserUpdate, KV_QUOTA,
};
use crate::model::*;
use crate::time;

/// A conformance case: takes a fresh, empty store; panics on failure.
pub type CaseFn = for<'a> fn(&'a dyn Store) -> BoxFuture<'a, ()>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every conformance case, by name, in the order [`run_all`] runs them.
        pub const CASES: &[(&str, CaseFn)] = &[
            $((stringify!($name), |store| Box::pin($name(store)))),*
        ];
    };
}

cases![
    ping_and_kind,
    user_round_trip,
    user_duplicate_username_conflicts,
    user_update,
    user_update_expecting_a_token_version,
    user_list_filters_and_pages,
    user_search_is_literal,
    user_counts,
    session_round_trip,
    session_mark_used_once,
    session_revoked_cannot_be_used,
    session_revoke_family,
    session_revoke_user_sessions,
    session_purge_expired,
    api_key_round_trip_and_touch,
    api_key_list_newest_first_own_only,
    api_key_delete_own_only,
    api_key_delete_all_of_user,
    chat_round_trip_and_owner_scope,
    chat_update,
    chat_sampling_settings,
    chat_delete_removes_messages,
    chat_list_order_filters_and_pages,
    chat_search_title_and_messages,
    chat_search_is_literal,
    chat_expired_is_invisible,
    chat_purge_expired,
    message_order_and_update,
    message_annotations,
    answer_progress_and_interrupt,
    interrupted_answers_are_counted_once,
    ticket_numbers_are_sequential,
    ticket_numbers_are_distinct_under_concurrency,
    ticket_update,
    ticket_list_filters_and_order,
    comment_order_and_internal,
    usage_daily_counts,
    generation_totals_per_day_and_model,
    generation_totals_sum_cached_prompt_tokens,
    audit_list,
    settings_round_trip,
    settings_swap,
    model_round_trip_and_name_conflict,
    model_update_delete_and_order,
    plugin_round_trip_and_replace,
    plugin_update_changes_named_fields,
    plugin_opt_ins,
    plugin_delete_removes_data_and_opt_ins,
    kv_round_trip_and_isolation,
    kv_list_prefix_order_and_limit,
    kv_quota_counts_keys_and_values,
    kv_quota_holds_under_concurrent_writes,
];

/// A per-case time limit, so a hung store fails the case instead of the run.
const CASE_TIMEOUT: StdDuration = StdDuration::from_secs(180);

/// Runs every case of [`CASES`], each on a fresh store from `make`, prints
/// `conformance <kind> <case> ... ok|FAILED`, and panics at the end listing
/// every failed case.
pub async fn run_all<F, Fut>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let filter: Vec<String> = std::env::var("CORRAL_CONFORMANCE_CASES")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut failed: Vec<String> = Vec::new();
    let mut ran = 0usize;
    for (name, case) in CASES {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        let store = make().await;
        let kind = store.kind();
        let case = *case;
        let mut handle = tokio::spawn(async move { case(&*store).await });
        let outcome = match tokio::time::timeout(CASE_TIMEOUT, &mut handle).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.is_panic() => Err(panic_message(e.into_panic())),
            Ok(Err(e)) => Err(format!("task failed: {e}")),
            Err(_) => {
                handle.abort();
                Err(format!("timed out after {CASE_TIMEOUT:?}"))
            }
        };
        match outcome {
            Ok(()) => println!("conformance {kind} {name} ... ok"),
            Err(why) => {
                println!("conformance {kind} {name} ... FAILED: {why}");
                failed.push(format!("{name}: {why}"));
            }
        }
    }
    println!(
        "conformance: {} passed, {} failed",
        ran - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        panic!(
            "{} of {ran} conformance cases failed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

// ---------------------------------------------------------------------------
// helpers

/// Awaits a store call and panics, naming the call, if it fails.
macro_rules! ok {
    ($call:expr) => {
        match $call.await {
            Ok(v) => v,
            Err(e) => panic!("`{}` failed: {e:?}", stringify!($call)),
        }
    };
}

/// An instant from its text form.
fn t(s: &str) -> DateTime<Utc> {
    time::parse(s).unwrap_or_else(|e| panic!("bad test instant {s}: {e}"))
}

/// The base instant of the cases plus `minutes`; milliseconds are non-zero
/// so a store that drops them fails the round trips.
fn ts(minutes: i64) -> DateTime<Utc> {
    t("2031-03-01T10:00:00.123Z") + Duration::minutes(minutes)
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_else(|e| panic!("bad test day {s}: {e}"))
}

fn expect_err<T: Debug>(
    result: StoreResult<T>,
    what: &str,
    want: &str,
    matches: fn(&StoreError) -> bool,
) {
    match result {
        Err(e) if matches(&e) => {}
        other => panic!("{what}: expected Err({want}), got {other:?}"),
    }
}

fn expect_conflict<T: Debug>(result: StoreResult<T>, what: &str) {
    expect_err(result, what, "Conflict", |e| {
        matches!(e, StoreError::Conflict(_))
    });
}

fn expect_not_found<T: Debug>(result: StoreResult<T>, what: &str) {
    expect_err(result, what, "NotFound", |e| {
        matches!(e, StoreError::NotFound)
    });
}

fn user(username: &str, display_name: &str, role: Role, disabled: bool, minutes: i64) -> User {
    User {
        id: new_id(),
        username: username.to_string(),
        display_name: display_name.to_string(),
        role,
        disabled,
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${username}"),
        token_version: 0,
        created_at: ts(minutes),
        updated_at: ts(minutes),
        last_login_at: None,
    }
}

fn usernames(users: &[User]) -> Vec<&str> {
    users.iter().map(|u| u.username.as_str()).collect()
}

fn session(user_id: &str, family_id: &str, token_hash: &str, expires_at: DateTime<Utc>) -> Session {
    Session {
        id: new_id(),
        user_id: user_id.to_string(),
        family_id: family_id.to_string(),
        token_hash: token_hash.to_string(),
        created_at: ts(0),
        expires_at,
        used: false,
        revoked: false,
    }
}

fn api_key(user_id: &str, name: &str, minutes: i64) -> ApiKey {
    ApiKey {
        id: new_id(),
        user_id: user_id.to_string(),
        name: name.to_string(),
        prefix: format!("crl_{name}"),
        key_hash: format!("hash-{user_id}-{name}"),
        created_at: ts(minutes),
        last_used_at: None,
        expires_at: None,
    }
}

fn key_names(keys: &[ApiKey]) -> Vec<&str> {
    keys.iter().map(|k| k.name.as_str()).collect()
}

fn chat(owner_id: &str, title: &str, pinned: bool, updated_minutes: i64) -> Chat {
    Chat {
        id: new_id(),
        owner_id: owner_id.to_string(),
        title: title.to_string(),
        model: "gemma-3-270m".to_string(),
        system_prompt: None,
        pinned,
        temporary: false,
        created_at: ts(0),
        updated_at: ts(updated_minutes),
        expires_at: None,
        sampling: Default::default(),
    }
}

fn titles(chats: &[Chat]) -> Vec<&str> {
    chats.iter().map(|c| c.title.as_str()).collect()
}

fn message(chat_id: &str, role: MessageRole, content: &str, minutes: i64) -> Message {
    Message {
        id: new_id(),
        chat_id: chat_id.to_string(),
        role,
        content: content.to_string(),
        status: MessageStatus::Complete,
        error: None,
        model: None,
        usage: None,
        created_at: ts(minutes),
        annotations: Vec::new(),
    }
}

fn contents(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.content.as_str()).collect()
}

fn ticket(owner: &User, subject: &str, body: &str, minutes: i64) -> Ticket {
    Ticket {
        id: new_id(),
        number: 0,
        owner_id: owner.id.clone(),
        owner_username: owner.username.clone(),
        subject: subject.to_string(),
        body: body.to_string(),
        category: TicketCategory::Question,
        priority: TicketPriority::Normal,
        status: TicketStatus::Open,
        assignee_id: None,
        assignee_username: None,
        chat_id: None,
        created_at: ts(minutes),
        updated_at: ts(minutes),
        resolved_at: None,
    }
}

fn subjects(tickets: &[Ticket]) -> Vec<&str> {
    tickets.iter().map(|t| t.subject.as_str()).collect()
}

fn all_users() -> UserQuery {
    UserQuery {
        limit: 100,
        ..Default::default()
    }
}

fn all_chats() -> ChatQuery {
    ChatQuery {
        limit: 100,
        ..Default::default()
    }
}

fn all_tickets() -> TicketQuery {
    TicketQuery {
        limit: 100,
        ..Default::default()
    }
}

fn all_audit() -> AuditQuery {
    AuditQuery {
        limit: 100,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// store

/// `ping` succeeds and `kind` names the implementation.
pub async fn ping_and_kind(s: &dyn Store) {
    ok!(s.ping());
    let kind = s.kind();
    assert!(!kind.is_empty(), "kind() is empty");
    assert!(
        kind == "sqlite" || kind == "mongodb",
        "kind() is {kind:?}; the contract says `sqlite` or `mongodb`"
    );
}

// ---------------------------------------------------------------------------
// users

/// A created user reads back identically by id and by username.
pub async fn user_round_trip(s: &dyn Store) {
    let mut alice = user("alice", "Alice Liddell", Role::Admin, false, 0);
    alice.token_version = 3;
    alice.last_login_at = Some(ts(5));
    let bob = user("bob", "Bob", Role::User, true, 1);
    ok!(s.create_user(&alice));
    ok!(s.create_user(&bob));

    assert_eq!(
        ok!(s.get_user(&alice.id)),
        Some(alice.clone()),
        "get_user(alice)"
    );
    assert_eq!(ok!(s.get_user(&bob.id)), Some(bob.clone()), "get_user(bob)");
    assert_eq!(
        ok!(s.get_user_by_username("alice")),
        Some(alice.clone()),
        "get_user_by_username(alice)"
    );
    assert_eq!(
        ok!(s.get_user_by_username("bob")),
        Some(bob.clone()),
        "get_user_by_username(bob)"
    );
    assert_eq!(ok!(s.get_user(&new_id())), None, "get_user(unknown id)");
    assert_eq!(
        ok!(s.get_user_by_username("nobody")),
        None,
        "get_user_by_username(unknown)"
    );
}

/// A second user with a taken username is `Conflict`, and the first user is
/// left as it was.
pub async fn user_duplicate_username_conflicts(s: &dyn Store) {
    let alice = user("alice", "Alice", Role::User, false, 0);
    ok!(s.create_user(&alice));
    let clash = user("alice", "Another Alice", Role::Admin, false, 1);
    expect_conflict(
        s.create_user(&clash).await,
        "create_user with a taken username",
    );
    assert_eq!(
        ok!(s.get_user(&clash.id)),
        None,
        "the clashing user was stored"
    );
    assert_eq!(
        ok!(s.get_user_by_username("alice")),
        Some(alice),
        "the first user changed"
    );
    assert_eq!(ok!(s.count_users()), 1, "count_users after a conflict");
}

/// `update_user` changes only the fields it names, bumps the token
/// version in the store and returns the user as stored; a missing user is
/// `NotFound`.
pub async fn user_update(s: &dyn Store) {
    let alice = user("alice", "Alice", Role::User, false, 0);
    let bob = user("bob", "Bob", Role::User, false, 1);
    ok!(s.create_user(&alice));
    ok!(s.create_user(&bob));

    let changes = UserUpdate {
        display_name: Some("Alicia Keys".to_string()),
        role: Some(Role::Technician),
        disabled: Some(true),
        password_hash: Some("$argon2id$new".to_string()),
        last_login_at: Some(ts(59)),
        updated_at: Some(ts(60)),
        bump_token_version: true,
        expect_token_version: None,
    };
    let stored = ok!(s.update_user(&alice.id, &changes));
    let expected = User {
        display_name: "Alicia Keys".to_string(),
        role: Role::Technician,
        disabled: true,
        password_hash: "$argon2id$new".to_string(),
        token_version: alice.token_version + 1,
        last_login_at: Some(ts(59)),
        updated_at: ts(60),
        ..alice.clone()
    };
    assert_eq!(stored, expected, "update_user's result");
    assert_eq!(
        ok!(s.get_user(&alice.id)),
        Some(expected.clone()),
        "user after update"
    );
    assert_eq!(
        ok!(s.get_user(&bob.id)),
        Some(bob.clone()),
        "another user changed"
    );

    // A write that names one field leaves every other one as stored, even
    // when the writer read the user before the other changes.
    let renamed = ok!(s.update_user(
        &alice.id,
        &UserUpdate {
            display_name: Some("Ali".to_string()),
            ..Default::default()
        }
    ));
    assert_eq!(
        renamed,
        User {
            display_name: "Ali".to_string(),
            ..expected.clone()
        },
        "a display-name update touched other fields"
    );
    assert!(
        renamed.disabled,
        "a display-name update enabled the account"
    );

    // Token versions add up, also from concurrent writers.
    let bump = UserUpdate {
        bump_token_version: true,
        ..Default::default()
    };
    let bumps = futures::future::join_all((0..5).map(|_| s.update_user(&alice.id, &bump))).await;
    for result in bumps {
        result.unwrap_or_else(|e| panic!("concurrent token bump failed: {e}"));
    }
    assert_eq!(
        ok!(s.get_user(&alice.id)).map(|u| u.token_version),
        Some(alice.token_version + 6),
        "token_version after six bumps"
    );

    // No change at all reads the user back.
    let same = ok!(s.update_user(&alice.id, &UserUpdate::default()));
    assert_eq!(same.token_version, alice.token_version + 6, "empty update");

    let ghost = user("ghost", "Ghost", Role::User, false, 2);
    expect_not_found(
        s.update_user(&ghost.id, &bump).await,
        "update_user of a missing user",
    );
    expect_not_found(
        s.update_user(&ghost.id, &UserUpdate::default()).await,
        "an empty update_user of a missing user",
    );
    assert_eq!(
        ok!(s.get_user(&ghost.id)),
        None,
        "update_user created a user"
    );
}

/// `expect_token_version` writes only over the version the writer read: a
/// password change cannot undo a reset that landed after it was checked.
pub async fn user_update_expecting_a_token_version(s: &dyn Store) {
    let alice = user("alice", "Alice", Role::User, false, 0);
    ok!(s.create_user(&alice));
    let read = alice.token_version;
    let reset = UserUpdate {
        password_hash: Some("$argon2id$reset".to_string()),
        bump_token_version: true,
        ..Default::default()
    };
    ok!(s.update_user(&alice.id, &reset));

    let change = UserUpdate {
        password_hash: Some("$argon2id$mine".to_string()),
        bump_token_version: true,
        expect_token_version: Some(read),
        ..Default::default()
    };
    match s.update_user(&alice.id, &change).await {
        Err(StoreError::Conflict(field)) => assert_eq!(field, "token_version"),
        other => panic!("a write over a stale token version: {other:?}"),
    }
    let stored = ok!(s.get_user(&alice.id)).expect("alice");
    assert_eq!(
        stored.password_hash, "$argon2id$reset",
        "the reset was undone"
    );
    assert_eq!(stored.token_version, read + 1, "token_version");

    let current = UserUpdate {
        expect_token_version: Some(read + 1),
        ..change.clone()
    };
    let written = ok!(s.update_user(&alice.id, &current));
    assert_eq!(written.password_hash, "$argon2id$mine");
    assert_eq!(written.token_version, read + 2);

    let ghost = user("ghost", "Ghost", Role::User, false, 1);
    expect_not_found(
        s.update_user(&ghost.id, &current).await,
        "update_user of a missing user with an expected version",
    );
}

/// Search on username and display name (case-insensitive), role and
/// disabled filters, order by username, limit/offset with the total.
pub async fn user_list_filters_and_pages(s: &dyn Store) {
    // Created out of username order.
    let dave = user("dave", "Dave Malik", Role::User, false, 0);
    let bob = user("bob", "Robert Builder", Role::Admin, false, 1);
    let erin = user("erin", "Erin Smith", Role::Technician, false, 2);
    let alice = user("alice", "Alice Liddell", Role::User, false, 3);
    let carol = user("carol", "Carol Danvers", Role::Technician, true, 4);
    for u in [&dave, &bob, &erin, &alice, &carol] {
        ok!(s.create_user(u));
    }

    let page = ok!(s.list_users(&all_users()));
    assert_eq!(
        usernames(&page.items),
        ["alice", "bob", "carol", "dave", "erin"],
        "list_users order"
    );
    assert_eq!(page.total, 5, "list_users total");
    assert_eq!(
        page.items,
        vec![
            alice.clone(),
            bob.clone(),
            carol.clone(),
            dave.clone(),
            erin.clone()
        ],
        "list_users records"
    );

    // "ALI" is in the username "alice" and the display name "Dave Malik".
    let page = ok!(s.list_users(&UserQuery {
        search: Some("ALI".into()),
        ..all_users()
    }));
    assert_eq!(
        usernames(&page.items),
        ["alice", "dave"],
        "search ALI (username or display name, any case)"
    );
    assert_eq!(page.total, 2, "search ALI total");

    let page = ok!(s.list_users(&UserQuery {
        search: Some("builder".into()),
        ..all_users()
    }));
    assert_eq!(
        usernames(&page.items),
        ["bob"],
        "search builder (display name)"
    );

    let page = ok!(s.list_users(&UserQuery {
        role: Some(Role::Technician),
        ..all_users()
    }));
    assert_eq!(usernames(&page.items), ["carol", "erin"], "role technician");
    assert_eq!(page.total, 2, "role technician total");

    let page = ok!(s.list_users(&UserQuery {
        role: Some(Role::User),
        ..all_users()
    }));
    assert_eq!(usernames(&page.items), ["alice", "dave"], "role user");

    let page = ok!(s.list_users(&UserQuery {
        disabled: Some(true),
        ..all_users()
    }));
    assert_eq!(usernames(&page.items), ["carol"], "disabled=true");

    let page = ok!(s.list_users(&UserQuery {
        disabled: Some(false),
        ..all_users()
    }));
    assert_eq!(
        usernames(&page.items),
        ["alice", "bob", "dave", "erin"],
        "disabled=false"
    );

    let page = ok!(s.list_users(&UserQuery {
        search: Some("r".into()),
        role: Some(Role::Technician),
        disabled: Some(false),
        ..all_users()
    }));
    assert_eq!(
        usernames(&page.items),
        ["erin"],
        "search r + technician + enabled"
    );
    assert_eq!(page.total, 1, "combined filters total");

    let page = ok!(s.list_users(&UserQuery {
        limit: 2,
        offset: 1,
        ..Default::default()
    }));
    assert_eq!(usernames(&page.items), ["bob", "carol"], "limit 2 offset 1");
    assert_eq!(page.total, 5, "total with limit 2 offset 1");

    let page = ok!(s.list_users(&UserQuery {
        limit: 2,
        offset: 4,
        ..Default::default()
    }));
    assert_eq!(usernames(&page.items), ["erin"], "limit 2 offset 4");
    assert_eq!(page.total, 5, "total on the last page");

    let page = ok!(s.list_users(&UserQuery {
        limit: 2,
        offset: 10,
        ..Default::default()
    }));
    assert!(
        page.items.is_empty(),
        "offset past the end: {:?}",
        page.items
    );
    assert_eq!(page.total, 5, "total with offset past the end");

    let page = ok!(s.list_users(&UserQuery {
        search: Some("i".into()),
        limit: 1,
        offset: 1,
        ..Default::default()
    }));
    // "i" is in alice, bob ("Robert Builder"), dave and erin, not in carol.
    assert_eq!(
        usernames(&page.items),
        ["bob"],
        "search i, limit 1 offset 1"
    );
    assert_eq!(page.total, 4, "search i total with a page");

    let page = ok!(s.list_users(&UserQuery {
        search: Some("zzz".into()),
        ..all_users()
    }));
    assert!(
        page.items.is_empty(),
        "search without matches: {:?}",
        page.items
    );
    assert_eq!(page.total, 0, "total without matches");
}

/// `%`, `_`, `.` and regex metacharacters in a user search match literally.
pub async fn user_search_is_literal(s: &dyn Store) {
    let a = user("a_b", "Plain", Role::User, false, 0);
    let b = user("axb", "Plain", Role::User, false, 1);
    let c = user("carl", "C. (Admin)+ 100%", Role::User, false, 2);
    let d = user("dora", "Cx Admin 1000", Role::User, false, 3);
    for u in [&a, &b, &c, &d] {
        ok!(s.create_user(u));
    }
    for (search, want) in [
        ("a_b", vec!["a_b"]),
        ("_", vec!["a_b"]),
        ("%", vec!["carl"]),
        ("0%", vec!["carl"]),
        ("c.", vec!["carl"]),
        ("(admin)+", vec!["carl"]),
        (".*", vec![]),
        ("a\u{0}b", vec![]),
    ] {
        let page = ok!(s.list_users(&UserQuery {
            search: Some(search.into()),
            ..all_users()
        }));
        assert_eq!(
            usernames(&page.items),
            want,
            "user search {search:?} must match literally"
        );
        assert_eq!(
            page.total,
            want.len() as u64,
            "total for user search {search:?}"
        );
    }
}

/// `count_active_staff` counts enabled admins and technicians only,
/// `count_active_in_role` enabled accounts of one role; `count_users`
/// counts everyone.
pub async fn user_counts(s: &dyn Store) {
    assert_eq!(ok!(s.count_users()), 0, "count_users on an empty store");
    assert_eq!(
        ok!(s.count_active_staff()),
        0,
        "count_active_staff on an empty store"
    );
    let users = [
        user("admin1", "A", Role::Admin, false, 0),
        user("admin2", "A", Role::Admin, true, 1),
        user("tech1", "T", Role::Technician, false, 2),
        user("tech2", "T", Role::Technician, true, 3),
        user("user1", "U", Role::User, false, 4),
        user("user2", "U", Role::User, true, 5),
    ];
    for u in &users {
        ok!(s.create_user(u));
    }
    assert_eq!(ok!(s.count_users()), 6, "count_users");
    assert_eq!(
        ok!(s.count_active_staff()),
        2,
        "count_active_staff (one enabled admin, one enabled technician)"
    );
    for role in [Role::Admin, Role::Technician, Role::User] {
        assert_eq!(
            ok!(s.count_active_in_role(role)),
            1,
            "count_active_in_role({role:?})"
        );
    }

    let demote = UserUpdate {
        role: Some(Role::User),
        ..Default::default()
    };
    ok!(s.update_user(&users[0].id, &demote));
    assert_eq!(
        ok!(s.count_active_staff()),
        1,
        "count_active_staff after a demotion"
    );
    let disable = UserUpdate {
        disabled: Some(true),
        ..Default::default()
    };
    ok!(s.update_user(&users[2].id, &disable));
    assert_eq!(
        ok!(s.count_active_staff()),
        0,
        "count_active_staff after disabling"
    );
    assert_eq!(
        (
            ok!(s.count_active_in_role(Role::Technician)),
            ok!(s.count_active_in_role(Role::User)),
        ),
        (0, 2),
        "count_active_in_role after a demotion and disabling"
    );
    assert_eq!(ok!(s.count_users()), 6, "count_users after updates");
}

// ---------------------------------------------------------------------------
// sessions

/// A created session reads back by its token hash.
pub async fn session_round_trip(s: &dyn Store) {
    let a = session("u1", "f1", "hash-a", ts(60 * 24));
    let mut b = session("u1", "f1", "hash-b", ts(60 * 24 + 1));
    b.used = true;
    ok!(s.create_session(&a));
    ok!(s.create_session(&b));
    assert_eq!(ok!(s.get_session_by_hash("hash-a")), Some(a), "session a");
    assert_eq!(ok!(s.get_session_by_hash("hash-b")), Some(b), "session b");
    assert_eq!(
        ok!(s.get_session_by_hash("hash-none")),
        None,
        "unknown token hash"
    );
}

/// `mark_session_used` wins exactly once.
pub async fn session_mark_used_once(s: &dyn Store) {
    let a = session("u1", "f1", "hash-a", ts(60));
    let b = session("u1", "f1", "hash-b", ts(60));
    ok!(s.create_session(&a));
    ok!(s.create_session(&b));
    assert!(
        ok!(s.mark_session_used(&a.id)),
        "first mark_session_used must be true"
    );
    assert!(
        !ok!(s.mark_session_used(&a.id)),
        "second mark_session_used must be false"
    );
    let stored = ok!(s.get_session_by_hash("hash-a")).expect("session a is gone");
    assert_eq!(
        stored,
        Session { used: true, ..a },
        "session a after marking"
    );
    assert_eq!(
        ok!(s.get_session_by_hash("hash-b")),
        Some(b.clone()),
        "marking a changed b"
    );

    // Concurrent marks: exactly one wins.
    let results = futures::future::join_all((0..4).map(|_| s.mark_session_used(&b.id))).await;
    let wins = results
        .into_iter()
        .map(|r| r.expect("concurrent mark_session_used failed"))
        .filter(|won| *won)
        .count();
    assert_eq!(
        wins, 1,
        "concurrent mark_session_used: exactly one must win"
    );
}

/// A revoked session cannot be marked used.
pub async fn session_revoked_cannot_be_used(s: &dyn Store) {
    let a = session("u1", "f1", "hash-a", ts(60));
    ok!(s.create_session(&a));
    ok!(s.revoke_family("f1"));
    assert!(
        !ok!(s.mark_session_used(&a.id)),
        "mark_session_used of a revoked session must be false"
    );
    let stored = ok!(s.get_session_by_hash("hash-a")).expect("session a is gone");
    assert!(stored.revoked, "session a is not revoked: {stored:?}");

    let b = session("u2", "f2", "hash-b", ts(60));
    ok!(s.create_session(&b));
    ok!(s.revoke_user_sessions("u2"));
    assert!(
        !ok!(s.mark_session_used(&b.id)),
        "mark_session_used after revoke_user_sessions must be false"
    );
}

/// `revoke_family` revokes that family only.
pub async fn session_revoke_family(s: &dyn Store) {
    let a1 = session("u1", "fa", "hash-a1", ts(60));
    let a2 = session("u1", "fa", "hash-a2", ts(61));
    let b = session("u1", "fb", "hash-b", ts(62));
    let c = session("u2", "fc", "hash-c", ts(63));
    for x in [&a1, &a2, &b, &c] {
        ok!(s.create_session(x));
    }
    ok!(s.revoke_family("fa"));
    assert_eq!(
        ok!(s.get_session_by_hash("hash-a1")),
        Some(Session {
            revoked: true,
            ..a1
        }),
        "a1 after revoke_family(fa)"
    );
    assert_eq!(
        ok!(s.get_session_by_hash("hash-a2")),
        Some(Session {
            revoked: true,
            ..a2
        }),
        "a2 after revoke_family(fa)"
    );
    assert_eq!(
        ok!(s.get_session_by_hash("hash-b")),
        Some(b),
        "another family of the same user was touched"
    );
    assert_eq!(
        ok!(s.get_session_by_hash("hash-c")),
        Some(c),
        "another user's family was touched"
    );
    // Revoking an unknown family is not an error.
    ok!(s.revoke_family("no-such-family"));
}

/// `revoke_user_sessions` revokes every session of that user only.
pub async fn session_revoke_user_sessions(s: &dyn Store) {
    let a = session("u1", "fa", "hash-a", ts(60));
    let b = session("u1", "fb", "hash-b", ts(61));
    let c = session("u2", "fc", "hash-c", ts(62));
    for x in [&a, &b, &c] {
        ok!(s.create_session(x));
    }
    ok!(s.revoke_user_sessions("u1"));
    assert_eq!(
        ok!(s.get_session_by_hash("hash-a")),
        Some(Session { revoked: true, ..a }),
        "a after revoke_user_sessions(u1)"
    );
    assert_eq!(
        ok!(s.get_session_by_hash("hash-b")),
        Some(Session { revoked: true, ..b }),
        "b after revoke_user_sessions(u1)"
    );
    assert_eq!(
        ok!(s.get_session_by_hash("hash-c")),
        Some(c),
        "another user's session was touched"
    );
    ok!(s.revoke_user_sessions("no-such-user"));
}

/// `purge_expired_sessions` deletes the sessions that expired before `now`.
pub async fn session_purge_expired(s: &dyn Store) {
    let now = ts(120);
    let old1 = session("u1", "f1", "hash-old1", ts(10));
    let old2 = session("u2", "f2", "hash-old2", now - Duration::milliseconds(1));
    // Expiring at `now` is expired, as a refresh sees it.
    let edge = session("u2", "f4", "hash-edge", now);
    let live1 = session("u1", "f1", "hash-live1", now + Duration::minutes(1));
    let live2 = session("u3", "f3", "hash-live2", ts(60 * 24 * 30));
    for x in [&old1, &old2, &edge, &live1, &live2] {
        ok!(s.create_session(x));
    }
    assert_eq!(ok!(s.purge_expired_sessions(now)), 3, "purged sessions");
    assert_eq!(
        ok!(s.get_session_by_hash("hash-edge")),
        None,
        "a session expiring at the purge survived"
    );
    assert_eq!(
        ok!(s.get_session_by_hash("hash-old1")),
        None,
        "old1 survived"
    );
    assert_eq!(
        ok!(s.get_session_by_hash("hash-old2")),
        None,
        "old2 survived"
    );
    assert_eq!(
        ok!(s.get_session_by_hash("hash-live1")),
        Some(live1),
        "live1 after purge"
    );
    assert_eq!(
        ok!(s.get_session_by_hash("hash-live2")),
        Some(live2),
        "live2 after purge"
    );
    assert_eq!(ok!(s.purge_expired_sessions(now)), 0, "second purge");
}

// ---------------------------------------------------------------------------
// api keys

/// A key reads back by hash; `touch_api_key` sets `last_used_at`.
pub async fn api_key_round_trip_and_touch(s: &dyn Store) {
    let mut a = api_key("u1", "laptop", 0);
    a.expires_at = Some(ts(60 * 24 * 90));
    let b = api_key("u1", "ci", 1);
    ok!(s.create_api_key(&a));
    ok!(s.create_api_key(&b));
    assert_eq!(
        ok!(s.get_api_key_by_hash(&a.key_hash)),
        Some(a.clone()),
        "key a"
    );
    assert_eq!(
        ok!(s.get_api_key_by_hash(&b.key_hash)),
        Some(b.clone()),
        "key b"
    );
    assert_eq!(ok!(s.get_api_key_by_hash("nope")), None, "unknown key hash");

    ok!(s.touch_api_key(&a.id, ts(30)));
    let want = ApiKey {
        last_used_at: Some(ts(30)),
        ..a.clone()
    };
    assert_eq!(
        ok!(s.get_api_key_by_hash(&a.key_hash)),
        Some(want),
        "key a after touch"
    );
    ok!(s.touch_api_key(&a.id, ts(45)));
    assert_eq!(
        ok!(s.get_api_key_by_hash(&a.key_hash)).and_then(|k| k.last_used_at),
        Some(ts(45)),
        "last_used_at after a second touch"
    );
    assert_eq!(
        ok!(s.get_api_key_by_hash(&b.key_hash)),
        Some(b),
        "touching a changed b"
    );
}

/// `list_api_keys` lists the user's own keys, newest first.
pub async fn api_key_list_newest_first_own_only(s: &dyn Store) {
    let k1 = api_key("u1", "first", 1);
    let k3 = api_key("u1", "third", 3);
    let k2 = api_key("u1", "second", 2);
    let other = api_key("u2", "other", 4);
    for k in [&k1, &k3, &k2, &other] {
        ok!(s.create_api_key(k));
    }
    let keys = ok!(s.list_api_keys("u1"));
    assert_eq!(
        key_names(&keys),
        ["third", "second", "first"],
        "u1's keys, newest first"
    );
    assert_eq!(keys, vec![k3, k2, k1], "u1's key records");
    assert_eq!(ok!(s.list_api_keys("u2")), vec![other], "u2's keys");
    assert!(ok!(s.list_api_keys("u3")).is_empty(), "a user without keys");
}

/// `delete_user_api_keys` deletes all of one user's keys and nobody else's.
pub async fn api_key_delete_all_of_user(s: &dyn Store) {
    let a = api_key("u1", "a", 1);
    let b = api_key("u1", "b", 2);
    let theirs = api_key("u2", "theirs", 3);
    for k in [&a, &b, &theirs] {
        ok!(s.create_api_key(k));
    }
    assert_eq!(ok!(s.delete_user_api_keys("u1")), 2, "u1 had two keys");
    assert!(ok!(s.list_api_keys("u1")).is_empty(), "u1's keys remain");
    assert_eq!(
        ok!(s.get_api_key_by_hash(&a.key_hash)),
        None,
        "a still found"
    );
    assert_eq!(
        ok!(s.list_api_keys("u2")),
        vec![theirs],
        "u2's key was touched"
    );
    assert_eq!(ok!(s.delete_user_api_keys("u3")), 0, "nobody's keys");
}

/// `delete_api_key` deletes only the user's own key.
pub async fn api_key_delete_own_only(s: &dyn Store) {
    let mine = api_key("u1", "mine", 1);
    let theirs = api_key("u2", "theirs", 2);
    ok!(s.create_api_key(&mine));
    ok!(s.create_api_key(&theirs));
    assert!(
        !ok!(s.delete_api_key("u1", &theirs.id)),
        "deleting another user's key must be false"
    );
    assert_eq!(
        ok!(s.get_api_key_by_hash(&theirs.key_hash)),
        Some(theirs.clone()),
        "another user's key was deleted"
    );
    assert!(ok!(s.delete_api_key("u1", &mine.id)), "deleting own key");
    assert_eq!(
        ok!(s.get_api_key_by_hash(&mine.key_hash)),
        None,
        "deleted key still found"
    );
    assert!(
        ok!(s.list_api_keys("u1")).is_empty(),
        "deleted key still listed"
    );
    assert!(
        !ok!(s.delete_api_key("u1", &mine.id)),
        "deleting twice must be false"
    );
    assert_eq!(ok!(s.list_api_keys("u2")), vec![theirs], "u2's keys");
}

// ---------------------------------------------------------------------------
// chats

/// A chat reads back identically for its owner and not for anyone else.
pub async fn chat_round_trip_and_owner_scope(s: &dyn Store) {
    let now = ts(10);
    let mut a = chat("alice", "Trip ideas", true, 5);
    a.system_prompt = Some("Be brief.".to_string());
    let b = chat("bob", "Bob's chat", false, 6);
    ok!(s.create_chat(&a));
    ok!(s.create_chat(&b));
    assert_eq!(
        ok!(s.get_chat("alice", &a.id, now)),
        Some(a.clone()),
        "alice's chat"
    );
    assert_eq!(
        ok!(s.get_chat("bob", &b.id, now)),
        Some(b.clone()),
        "bob's chat"
    );
    assert_eq!(
        ok!(s.get_chat("bob", &a.id, now)),
        None,
        "bob must not see alice's chat"
    );
    assert_eq!(
        ok!(s.get_chat("alice", &new_id(), now)),
        None,
        "unknown chat"
    );
    let page = ok!(s.list_chats("bob", &all_chats(), now));
    assert_eq!(page.items, vec![b.clone()], "bob's list");
    assert_eq!(page.total, 1, "bob's total");

    assert!(
        !ok!(s.delete_chat("bob", &a.id)),
        "bob deleting alice's chat must be false"
    );
    assert_eq!(
        ok!(s.get_chat("alice", &a.id, now)),
        Some(a.clone()),
        "alice's chat after bob's delete"
    );
    assert!(
        !ok!(s.delete_chat("alice", &new_id())),
        "deleting an unknown chat"
    );
}

/// A chat's sampling settings read back as written, every field and any
/// seed; an update replaces them as a whole, an empty value clears them,
/// and updates that do not name them keep them.
pub async fn chat_sampling_settings(s: &dyn Store) {
    let now = ts(100);
    let plain = chat("alice", "Plain", false, 1);
    ok!(s.create_chat(&plain));
    assert_eq!(
        ok!(s.get_chat("alice", &plain.id, now)).map(|c| c.sampling),
        Some(SamplingOverrides::default()),
        "a chat created without sampling settings"
    );

    let every = SamplingOverrides {
        temperature: Some(0.7),
        top_p: Some(0.9),
        top_k: Some(40),
        min_p: Some(0.05),
        repeat_penalty: Some(1.1),
        max_tokens: Some(256),
        seed: Some(u64::MAX - 3),
        stop: Some(vec!["</s>".to_string(), "ünï".to_string()]),
        ignore_eos: Some(false),
    };
    let a = Chat {
        sampling: every.clone(),
        ..chat("alice", "Tuned", false, 2)
    };
    ok!(s.create_chat(&a));
    assert_eq!(
        ok!(s.get_chat("alice", &a.id, now)).as_ref(),
        Some(&a),
        "a chat with every sampling setting"
    );
    let listed = ok!(s.list_chats("alice", &all_chats(), now));
    let found = listed.items.iter().find(|c| c.id == a.id);
    assert_eq!(found, Some(&a), "the listed chat's sampling settings");

    // Touching the chat keeps its settings.
    let touched = ok!(s.update_chat(
        "alice",
        &a.id,
        &ChatUpdate {
            title: Some("Renamed".to_string()),
            updated_at: Some(ts(3)),
            ..Default::default()
        }
    ));
    assert_eq!(touched.sampling, every, "a rename changed the settings");

    // An update replaces the settings as a whole.
    let fewer = SamplingOverrides {
        max_tokens: Some(3),
        seed: Some(7),
        stop: Some(Vec::new()),
        ..Default::default()
    };
    let replaced = ok!(s.update_chat(
        "alice",
        &a.id,
        &ChatUpdate {
            sampling: Some(fewer.clone()),
            updated_at: Some(ts(4)),
            ..Default::default()
        }
    ));
    assert_eq!(
        replaced,
        Chat {
            title: "Renamed".to_string(),
            sampling: fewer.clone(),
            updated_at: ts(4),
            ..a.clone()
        },
        "update_chat's result with new sampling settings"
    );
    assert_eq!(
        ok!(s.get_chat("alice", &a.id, now)),
        Some(replaced.clone()),
        "chat after replacing its sampling settings"
    );

    // Another owner cannot change them.
    expect_not_found(
        s.update_chat(
            "mallory",
            &a.id,
            &ChatUpdate {
                sampling: Some(SamplingOverrides::default()),
                ..Default::default()
            },
        )
        .await,
        "update_chat of another owner's sampling settings",
    );

    let cleared = ok!(s.update_chat(
        "alice",
        &a.id,
        &ChatUpdate {
            sampling: Some(SamplingOverrides::default()),
            ..Default::default()
        }
    ));
    assert_eq!(
        cleared.sampling,
        SamplingOverrides::default(),
        "clearing the sampling settings"
    );
    assert_eq!(
        ok!(s.get_chat("alice", &a.id, now)),
        Some(cleared),
        "chat after clearing its sampling settings"
    );
}

/// `update_chat` changes only the fields it names and returns the chat as
/// stored; a conditional title applies only while the title is the one
/// expected; it does not reach another owner's chat.
pub async fn chat_update(s: &dyn Store) {
    let now = ts(100);
    let a = chat("alice", "Old title", false, 1);
    ok!(s.create_chat(&a));
    let changes = ChatUpdate {
        title: Some("New title".to_string()),
        model: Some("qwen3-0.6b".to_string()),
        system_prompt: Some(Some("You are terse.".to_string())),
        pinned: Some(true),
        updated_at: Some(ts(50)),
        ..Default::default()
    };
    let changed = Chat {
        title: "New title".to_string(),
        model: "qwen3-0.6b".to_string(),
        system_prompt: Some("You are terse.".to_string()),
        pinned: true,
        updated_at: ts(50),
        ..a.clone()
    };
    assert_eq!(
        ok!(s.update_chat("alice", &a.id, &changes)),
        changed,
        "update_chat's result"
    );
    assert_eq!(
        ok!(s.get_chat("alice", &a.id, now)),
        Some(changed.clone()),
        "chat after update"
    );

    // Touching the chat (as an answer's end does) keeps a rename made
    // after the answer started.
    let touched = ok!(s.update_chat(
        "alice",
        &a.id,
        &ChatUpdate {
            updated_at: Some(ts(51)),
            ..Default::default()
        }
    ));
    assert_eq!(
        touched,
        Chat {
            updated_at: ts(51),
            ..changed.clone()
        },
        "a touch changed more than updated_at"
    );

    // Naming an untitled chat applies only while it is untitled.
    let named = ok!(s.update_chat(
        "alice",
        &a.id,
        &ChatUpdate {
            title_if: Some(("Old title".to_string(), "From message".to_string())),
            ..Default::default()
        }
    ));
    assert_eq!(
        named.title, "New title",
        "a conditional title undid a rename"
    );
    let named = ok!(s.update_chat(
        "alice",
        &a.id,
        &ChatUpdate {
            title_if: Some(("New title".to_string(), "From message".to_string())),
            updated_at: Some(ts(52)),
            ..Default::default()
        }
    ));
    assert_eq!(
        (named.title.as_str(), named.updated_at),
        ("From message", ts(52)),
        "a conditional title on the expected title"
    );

    let cleared = ok!(s.update_chat(
        "alice",
        &a.id,
        &ChatUpdate {
            system_prompt: Some(None),
            ..Default::default()
        }
    ));
    assert_eq!(cleared.system_prompt, None, "clearing system_prompt");
    assert_eq!(
        ok!(s.get_chat("alice", &a.id, now)),
        Some(cleared.clone()),
        "chat after clearing system_prompt"
    );

    // The same id under another owner is not that chat.
    let hijack = ChatUpdate {
        title: Some("Hijacked".to_string()),
        ..Default::default()
    };
    expect_not_found(
        s.update_chat("mallory", &a.id, &hijack).await,
        "update_chat with the id of another owner's chat",
    );
    expect_not_found(
        s.update_chat("mallory", &a.id, &ChatUpdate::default())
            .await,
        "an empty update_chat of another owner's chat",
    );
    assert_eq!(
        ok!(s.get_chat("alice", &a.id, now)),
        Some(cleared),
        "another owner's update_chat changed the chat"
    );
    assert_eq!(
        ok!(s.get_chat("mallory", &a.id, now)),
        None,
        "another owner's update_chat moved the chat"
    );

    let ghost = chat("alice", "Ghost", false, 2);
    expect_not_found(
        s.update_chat("alice", &ghost.id, &hijack).await,
        "update_chat of a missing chat",
    );
    assert_eq!(
        ok!(s.get_chat("alice", &ghost.id, now)),
        None,
        "update created a chat"
    );
}

/// `delete_chat` removes the chat and its messages, and only those.
pub async fn chat_delete_removes_messages(s: &dyn Store) {
    let now = ts(100);
    let a = chat("alice", "Doomed", false, 1);
    let b = chat("alice", "Kept", false, 2);
    ok!(s.create_chat(&a));
    ok!(s.create_chat(&b));
    let m1 = message(&a.id, MessageRole::User, "hello", 1);
    let m2 = message(&a.id, MessageRole::Assistant, "hi there", 2);
    let m3 = message(&b.id, MessageRole::User, "kept message", 3);
    for m in [&m1, &m2, &m3] {
        ok!(s.add_message(m));
    }
    assert!(
        ok!(s.delete_chat("alice", &a.id)),
        "delete_chat of an own chat"
    );
    assert_eq!(
        ok!(s.get_chat("alice", &a.id, now)),
        None,
        "deleted chat still found"
    );
    assert!(
        ok!(s.list_messages(&a.id)).is_empty(),
        "messages of a deleted chat remain"
    );
    assert!(
        !ok!(s.delete_chat("alice", &a.id)),
        "deleting twice must be false"
    );
    assert_eq!(
        ok!(s.list_messages(&b.id)),
        vec![m3],
        "another chat's messages"
    );
    assert_eq!(
        ok!(s.get_chat("alice", &b.id, now)),
        Some(b),
        "another chat"
    );
    // An answer stored after its chat was deleted is refused, not kept
    // where nothing can reach or purge it.
    let late = message(&a.id, MessageRole::Assistant, "too late", 4);
    assert!(
        matches!(s.add_message(&late).await, Err(StoreError::NotFound)),
        "a message added to a deleted chat"
    );
    assert!(
        ok!(s.list_messages(&a.id)).is_empty(),
        "a message of a deleted chat was kept"
    );
}

/// Pinned first, then most recently updated; pinned filter; pages.
pub async fn chat_list_order_filters_and_pages(s: &dyn Store) {
    let now = ts(1000);
    let c1 = chat("alice", "c1 plain old", false, 1);
    let c2 = chat("alice", "c2 pinned old", true, 2);
    let c3 = chat("alice", "c3 plain new", false, 4);
    let c4 = chat("alice", "c4 pinned new", true, 3);
    let other = chat("bob", "bob's", true, 9);
    for c in [&c1, &c2, &c3, &c4, &other] {
        ok!(s.create_chat(c));
    }
    let page = ok!(s.list_chats("alice", &all_chats(), now));
    assert_eq!(
        titles(&page.items),
        [
            "c4 pinned new",
            "c2 pinned old",
            "c3 plain new",
            "c1 plain old"
        ],
        "pinned first, then updated_at desc"
    );
    assert_eq!(page.total, 4, "total");
    assert_eq!(
        page.items,
        vec![c4.clone(), c2.clone(), c3.clone(), c1.clone()],
        "chat records"
    );

    let page = ok!(s.list_chats(
        "alice",
        &ChatQuery {
            pinned: Some(true),
            ..all_chats()
        },
        now
    ));
    assert_eq!(
        titles(&page.items),
        ["c4 pinned new", "c2 pinned old"],
        "pinned=true"
    );
    assert_eq!(page.total, 2, "pinned=true total");

    let page = ok!(s.list_chats(
        "alice",
        &ChatQuery {
            pinned: Some(false),
            ..all_chats()
        },
        now
    ));
    assert_eq!(
        titles(&page.items),
        ["c3 plain new", "c1 plain old"],
        "pinned=false"
    );

    let page = ok!(s.list_chats(
        "alice",
        &ChatQuery {
            limit: 2,
            offset: 1,
            ..Default::default()
        },
        now
    ));
    assert_eq!(
        titles(&page.items),
        ["c2 pinned old", "c3 plain new"],
        "limit 2 offset 1"
    );
    assert_eq!(page.total, 4, "total with limit 2 offset 1");

    let page = ok!(s.list_chats(
        "alice",
        &ChatQuery {
            limit: 10,
            offset: 4,
            ..Default::default()
        },
        now
    ));
    assert!(page.items.is_empty(), "offset at the end: {:?}", page.items);
    assert_eq!(page.total, 4, "total with offset at the end");

    // Touching c1 moves it ahead of c3.
    let touch = ChatUpdate {
        updated_at: Some(ts(10)),
        ..Default::default()
    };
    ok!(s.update_chat("alice", &c1.id, &touch));
    let page = ok!(s.list_chats("alice", &all_chats(), now));
    assert_eq!(
        titles(&page.items),
        [
            "c4 pinned new",
            "c2 pinned old",
            "c1 plain old",
            "c3 plain new"
        ],
        "order after updating c1"
    );

    let page = ok!(s.list_chats("carol", &all_chats(), now));
    assert!(
        page.items.is_empty(),
        "a user without chats: {:?}",
        page.items
    );
    assert_eq!(page.total, 0, "total of a user without chats");
}

/// Search matches the title or any message, case-insensitively, once per
/// chat, and only the owner's chats.
pub async fn chat_search_title_and_messages(s: &dyn Store) {
    let now = ts(1000);
    let trip = chat("alice", "Trip ideas to PARIS", false, 3);
    let rust = chat("alice", "Rust lifetimes", false, 2);
    let cooking = chat("alice", "Cooking", false, 1);
    let bobs = chat("bob", "Bob cooks eggs", false, 4);
    for c in [&trip, &rust, &cooking, &bobs] {
        ok!(s.create_chat(c));
    }
    for m in [
        message(
            &cooking.id,
            MessageRole::User,
            "How long to boil an EGG?",
            1,
        ),
        message(
            &cooking.id,
            MessageRole::Assistant,
            "Boil the egg 7 minutes.",
            2,
        ),
        message(
            &rust.id,
            MessageRole::User,
            "What about borrowing in Paris?",
            3,
        ),
        message(&bobs.id, MessageRole::User, "eggs and more eggs", 4),
    ] {
        ok!(s.add_message(&m));
    }
    for (search, want) in [
        ("trip", vec!["Trip ideas to PARIS"]),
        ("paris", vec!["Trip ideas to PARIS", "Rust lifetimes"]),
        ("EgG", vec!["Cooking"]),
        ("boil", vec!["Cooking"]),
        ("LIFETIME", vec!["Rust lifetimes"]),
        ("nothing like this", vec![]),
    ] {
        let page = ok!(s.list_chats(
            "alice",
            &ChatQuery {
                search: Some(search.into()),
                ..all_chats()
            },
            now
        ));
        assert_eq!(titles(&page.items), want, "chat search {search:?}");
        assert_eq!(
            page.total,
            want.len() as u64,
            "total of chat search {search:?}"
        );
    }

    let page = ok!(s.list_chats(
        "bob",
        &ChatQuery {
            search: Some("egg".into()),
            ..all_chats()
        },
        now
    ));
    assert_eq!(titles(&page.items), ["Bob cooks eggs"], "bob's search egg");
    assert_eq!(page.total, 1, "bob's search total");

    let page = ok!(s.list_chats(
        "alice",
        &ChatQuery {
            search: Some("paris".into()),
            limit: 1,
            offset: 1,
            ..Default::default()
        },
        now
    ));
    assert_eq!(
        titles(&page.items),
        ["Rust lifetimes"],
        "search paris, limit 1 offset 1"
    );
    assert_eq!(page.total, 2, "search paris total with a page");

    let page = ok!(s.list_chats(
        "alice",
        &ChatQuery {
            search: Some("paris".into()),
            pinned: Some(true),
            ..all_chats()
        },
        now
    ));
    assert!(
        page.items.is_empty(),
        "search paris + pinned: {:?}",
        page.items
    );
    assert_eq!(page.total, 0, "search paris + pinned total");
}

/// `%`, `_`, `.`, `\` and regex metacharacters in a chat search match
/// literally, in titles and in messages.
pub async fn chat_search_is_literal(s: &dyn Store) {
    let now = ts(1000);
    let all_titles = [
        "100% done",
        "1000 done",
        "a_b",
        "axb",
        "v1.2",
        "v1x2",
        "(x+y)*[z]",
        "xxy z",
        "C:\\temp\\x",
        "C:temp",
        "cost $5 ^ up|down",
    ];
    for (i, title) in all_titles.iter().enumerate() {
        ok!(s.create_chat(&chat("alice", title, false, 100 - i as i64)));
    }
    let with_percent = chat("alice", "msg percent", false, 1);
    let without = chat("alice", "msg plain", false, 0);
    ok!(s.create_chat(&with_percent));
    ok!(s.create_chat(&without));
    ok!(s.add_message(&message(
        &with_percent.id,
        MessageRole::User,
        "rate is 5% now",
        1
    )));
    ok!(s.add_message(&message(&without.id, MessageRole::User, "rate is 5 now", 2)));

    for (search, want) in [
        ("0% d", vec!["100% done"]),
        ("%", vec!["100% done", "msg percent"]),
        ("a_b", vec!["a_b"]),
        ("_", vec!["a_b"]),
        ("1.2", vec!["v1.2"]),
        ("(x+y)*[", vec!["(x+y)*[z]"]),
        ("a\u{0}b", vec![]),
        ("\\temp", vec!["C:\\temp\\x"]),
        ("\\", vec!["C:\\temp\\x"]),
        ("$5 ^ up|", vec!["cost $5 ^ up|down"]),
        (".*", vec![]),
        ("5% n", vec!["msg percent"]),
    ] {
        let page = ok!(s.list_chats(
            "alice",
            &ChatQuery {
                search: Some(search.into()),
                ..all_chats()
            },
            now
        ));
        assert_eq!(
            titles(&page.items),
            want,
            "chat search {search:?} must match literally"
        );
        assert_eq!(
            page.total,
            want.len() as u64,
            "total of chat search {search:?}"
        );
    }
}

/// A temporary chat disappears from every read at `expires_at`, before any
/// sweep.
pub async fn chat_expired_is_invisible(s: &dyn Store) {
    let now = ts(100);
    let permanent = chat("alice", "permanent", false, 1);
    let mut expired = chat("alice", "expired", true, 5);
    expired.temporary = true;
    expired.expires_at = Some(now - Duration::minutes(1));
    let mut at_now = chat("alice", "expires now", true, 4);
    at_now.temporary = true;
    at_now.expires_at = Some(now);
    let mut live = chat("alice", "live temporary", false, 3);
    live.temporary = true;
    live.expires_at = Some(now + Duration::hours(1));
    for c in [&permanent, &expired, &at_now, &live] {
        ok!(s.create_chat(c));
    }
    ok!(s.add_message(&message(&expired.id, MessageRole::User, "needle", 1)));

    assert_eq!(
        ok!(s.get_chat("alice", &expired.id, now)),
        None,
        "an expired chat is visible to get_chat"
    );
    assert_eq!(
        ok!(s.get_chat("alice", &at_now.id, now)),
        None,
        "a chat is visible to get_chat at the instant it expires"
    );
    assert_eq!(
        ok!(s.get_chat("alice", &live.id, now)),
        Some(live.clone()),
        "a live temporary chat"
    );
    assert_eq!(
        ok!(s.get_chat("alice", &permanent.id, now)),
        Some(permanent.clone()),
        "a permanent chat"
    );
    let page = ok!(s.list_chats("alice", &all_chats(), now));
    assert_eq!(
        titles(&page.items),
        ["live temporary", "permanent"],
        "list_chats shows expired chats"
    );
    assert_eq!(page.total, 2, "list_chats total counts expired chats");
    let page = ok!(s.list_chats(
        "alice",
        &ChatQuery {
            search: Some("needle".into()),
            ..all_chats()
        },
        now
    ));
    assert!(
        page.items.is_empty(),
        "search finds an expired chat: {:?}",
        page.items
    );
    assert_eq!(page.total, 0, "search total counts an expired chat");

    // Later, the temporary chat has expired too; earlier, the expired one
    // was live. Expiry is judged against `now`, not the wall clock.
    let later = now + Duration::hours(2);
    assert_eq!(
        ok!(s.get_chat("alice", &live.id, later)),
        None,
        "a temporary chat after its expiry"
    );
    let page = ok!(s.list_chats("alice", &all_chats(), later));
    assert_eq!(titles(&page.items), ["permanent"], "list_chats later");
    assert_eq!(page.total, 1, "list_chats total later");
    let earlier = now - Duration::minutes(2);
    assert_eq!(
        ok!(s.get_chat("alice", &expired.id, earlier)),
        Some(expired.clone()),
        "a temporary chat before its expiry"
    );
}

/// `purge_expired_chats` deletes expired chats and their messages only.
pub async fn chat_purge_expired(s: &dyn Store) {
    let now = ts(100);
    let mut expired = chat("alice", "expired", false, 1);
    expired.temporary = true;
    expired.expires_at = Some(now - Duration::minutes(1));
    let mut live = chat("alice", "live temporary", false, 2);
    live.temporary = true;
    live.expires_at = Some(now + Duration::minutes(1));
    let permanent = chat("bob", "permanent", false, 3);
    for c in [&expired, &live, &permanent] {
        ok!(s.create_chat(c));
    }
    let m_expired = message(&expired.id, MessageRole::User, "gone soon", 1);
    let m_live = message(&live.id, MessageRole::User, "still here", 2);
    let m_perm = message(&permanent.id, MessageRole::User, "forever", 3);
    for m in [&m_expired, &m_live, &m_perm] {
        ok!(s.add_message(m));
    }

    assert_eq!(ok!(s.purge_expired_chats(now)), 1, "purged chats");
    assert!(
        ok!(s.list_messages(&expired.id)).is_empty(),
        "messages of a purged chat remain"
    );
    assert_eq!(
        ok!(s.get_chat("alice", &expired.id, expired.created_at)),
        None,
        "a purged chat is still found (asked at a time it was live)"
    );
    assert_eq!(
        ok!(s.get_chat("alice", &live.id, now)),
        Some(live.clone()),
        "a live temporary chat after purge"
    );
    assert_eq!(
        ok!(s.get_chat("bob", &permanent.id, now)),
        Some(permanent.clone()),
        "a permanent chat after purge"
    );
    assert_eq!(
        ok!(s.list_messages(&live.id)),
        vec![m_live],
        "live chat's messages"
    );
    assert_eq!(
        ok!(s.list_messages(&permanent.id)),
        vec![m_perm],
        "permanent chat's messages"
    );
    assert_eq!(ok!(s.purge_expired_chats(now)), 0, "second purge");
}

// ---------------------------------------------------------------------------
// messages

/// Messages list oldest first; `update_message` changes the fields it
/// names.
pub async fn message_order_and_update(s: &dyn Store) {
    let a = chat("alice", "a", false, 1);
    let b = chat("alice", "b", false, 2);
    ok!(s.create_chat(&a));
    ok!(s.create_chat(&b));
    // Added out of order.
    let m3 = message(&a.id, MessageRole::Assistant, "third", 3);
    let m1 = message(&a.id, MessageRole::System, "first", 1);
    let m2 = message(&a.id, MessageRole::User, "second", 2);
    let other = message(&b.id, MessageRole::User, "other chat", 0);
    for m in [&m3, &m1, &m2, &other] {
        ok!(s.add_message(m));
    }
    let list = ok!(s.list_messages(&a.id));
    assert_eq!(
        contents(&list),
        ["first", "second", "third"],
        "oldest first"
    );
    assert_eq!(
        list,
        vec![m1.clone(), m2.clone(), m3.clone()],
        "message records"
    );
    assert_eq!(
        ok!(s.list_messages(&b.id)),
        vec![other],
        "other chat's messages"
    );
    assert!(ok!(s.list_messages(&new_id())).is_empty(), "unknown chat");

    let mut pending = message(&a.id, MessageRole::Assistant, "", 4);
    pending.status = MessageStatus::Pending;
    ok!(s.add_message(&pending));
    let failed = Message {
        content: "partial answer".to_string(),
        status: MessageStatus::Failed,
        error: Some("backend went away".to_string()),
        ..pending.clone()
    };
    ok!(s.update_message(
        &pending.id,
        &MessageUpdate {
            content: Some("partial answer".to_string()),
            status: Some(MessageStatus::Failed),
            error: Some(Some("backend went away".to_string())),
            ..Default::default()
        }
    ));
    assert_eq!(
        ok!(s.list_messages(&a.id)),
        vec![m1.clone(), m2.clone(), m3.clone(), failed.clone()],
        "messages after update_message"
    );
    let usage = MessageUsage {
        prompt_tokens: 31,
        cached_tokens: 24,
        completion_tokens: 12,
        time_to_first_token_ms: 87,
        tokens_per_second: 41.25,
    };
    // Written anew, later (a regenerated answer).
    let done = Message {
        content: "full answer".to_string(),
        status: MessageStatus::Complete,
        error: None,
        model: Some("gemma-3-270m".to_string()),
        usage: Some(usage.clone()),
        created_at: failed.created_at + Duration::seconds(30),
        ..failed
    };
    ok!(s.update_message(
        &done.id,
        &MessageUpdate {
            content: Some("full answer".to_string()),
            status: Some(MessageStatus::Complete),
            error: Some(None),
            model: Some(Some("gemma-3-270m".to_string())),
            usage: Some(Some(usage)),
            annotations: None,
            created_at: Some(done.created_at),
        }
    ));
    let cancelled = Message {
        status: MessageStatus::Cancelled,
        ..m3.clone()
    };
    ok!(s.update_message(
        &m3.id,
        &MessageUpdate {
            status: Some(MessageStatus::Cancelled),
            ..Default::default()
        }
    ));
    assert_eq!(
        ok!(s.list_messages(&a.id)),
        vec![m1, m2, cancelled, done],
        "messages after more updates"
    );

    let ghost = message(&a.id, MessageRole::User, "ghost", 9);
    expect_not_found(
        s.update_message(
            &ghost.id,
            &MessageUpdate {
                content: Some("ghost".to_string()),
                ..Default::default()
            },
        )
        .await,
        "update_message of a missing message",
    );
}

fn annotation(plugin: &str, text: &str) -> MessageAnnotation {
    MessageAnnotation {
        plugin: plugin.to_string(),
        text: text.to_string(),
    }
}

/// Annotations are stored with a message, in order; an update replaces
/// them only when it names them; a message without any reads as empty.
pub async fn message_annotations(s: &dyn Store) {
    let a = chat("alice", "a", false, 1);
    ok!(s.create_chat(&a));
    let question = message(&a.id, MessageRole::User, "where is Paris?", 1);
    let mut answer = message(&a.id, MessageRole::Assistant, "In France.", 2);
    answer.annotations = vec![
        annotation("web-sources", "Source: https://en.wikipedia.org/wiki/Paris"),
        annotation("fact-check", "Geprüft — ✓"),
    ];
    ok!(s.add_message(&question));
    ok!(s.add_message(&answer));
    assert_eq!(
        ok!(s.list_messages(&a.id)),
        vec![question.clone(), answer.clone()],
        "messages with and without annotations"
    );

    let notes = vec![annotation("web-sources", "Source: https://example.com/a")];
    ok!(s.update_message(
        &answer.id,
        &MessageUpdate {
            annotations: Some(notes.clone()),
            ..Default::default()
        }
    ));
    let replaced = Message {
        annotations: notes.clone(),
        ..answer.clone()
    };
    assert_eq!(
        ok!(s.list_messages(&a.id))[1],
        replaced,
        "annotations after replacing them"
    );
    ok!(s.update_message(
        &answer.id,
        &MessageUpdate {
            content: Some("In France, on the Seine.".to_string()),
            ..Default::default()
        }
    ));
    let stored = ok!(s.list_messages(&a.id));
    assert_eq!(
        stored[1].annotations, notes,
        "an update that does not name annotations kept them"
    );
    assert_eq!(stored[1].content, "In France, on the Seine.");
    ok!(s.update_message(
        &answer.id,
        &MessageUpdate {
            annotations: Some(Vec::new()),
            ..Default::default()
        }
    ));
    assert!(
        ok!(s.list_messages(&a.id))[1].annotations.is_empty(),
        "an empty list removes the annotations"
    );

    // A pending answer's saved progress and its interruption keep them.
    let mut pending = message(&a.id, MessageRole::Assistant, "", 3);
    pending.status = MessageStatus::Pending;
    pending.annotations = vec![annotation("web-sources", "Source: early")];
    ok!(s.add_message(&pending));
    let so_far = MessageUsage {
        prompt_tokens: 10,
        cached_tokens: 0,
        completion_tokens: 2,
        time_to_first_token_ms: 30,
        tokens_per_second: 10.0,
    };
    assert!(ok!(s.save_answer_progress(&pending.id, "Par", &so_far)));
    let interrupted = ok!(s.interrupt_pending_answers());
    assert_eq!(interrupted.len(), 1, "one pending answer");
    assert_eq!(
        interrupted[0].0.annotations, pending.annotations,
        "an interrupted answer's annotations"
    );
    assert_eq!(
        ok!(s.list_messages(&a.id))[2].annotations,
        pending.annotations,
        "stored annotations of the interrupted answer"
    );
}

/// A pending answer's text is saved as it grows, and only while pending;
/// answers left pending are marked `interrupted` with that text and their
/// chat's owner, once.
pub async fn answer_progress_and_interrupt(s: &dyn Store) {
    let a = chat("alice", "a", false, 1);
    let b = chat("bob", "b", false, 2);
    ok!(s.create_chat(&a));
    ok!(s.create_chat(&b));
    let question = message(&a.id, MessageRole::User, "tell me", 1);
    let mut growing = message(&a.id, MessageRole::Assistant, "", 2);
    growing.status = MessageStatus::Pending;
    growing.model = Some("gemma-3-270m".to_string());
    let mut finished = message(&b.id, MessageRole::Assistant, "", 3);
    finished.status = MessageStatus::Pending;
    let mut silent = message(&b.id, MessageRole::Assistant, "", 4);
    silent.status = MessageStatus::Pending;
    for m in [&question, &growing, &finished, &silent] {
        ok!(s.add_message(m));
    }
    let so_far = MessageUsage {
        prompt_tokens: 20,
        cached_tokens: 0,
        completion_tokens: 5,
        time_to_first_token_ms: 40,
        tokens_per_second: 25.0,
    };
    assert!(
        ok!(s.save_answer_progress(&growing.id, "Once upon", &so_far)),
        "saving a pending answer's text"
    );
    assert!(
        ok!(s.save_answer_progress(&finished.id, "Done", &so_far)),
        "saving another pending answer's text"
    );
    ok!(s.update_message(
        &finished.id,
        &MessageUpdate {
            content: Some("Done.".to_string()),
            status: Some(MessageStatus::Complete),
            ..Default::default()
        }
    ));
    assert!(
        !ok!(s.save_answer_progress(&finished.id, "late", &so_far)),
        "a save after the answer ended reported success"
    );
    assert!(
        !ok!(s.save_answer_progress(&question.id, "hijack", &so_far)),
        "a save reached a complete message"
    );
    assert!(
        !ok!(s.save_answer_progress(&new_id(), "x", &so_far)),
        "a save reached a missing message"
    );

    let mut interrupted = ok!(s.interrupt_pending_answers());
    interrupted.sort_by_key(|(m, _)| m.created_at);
    let expected_growing = Message {
        content: "Once upon".to_string(),
        status: MessageStatus::Interrupted,
        usage: Some(so_far.clone()),
        ..growing.clone()
    };
    let expected_silent = Message {
        status: MessageStatus::Interrupted,
        ..silent.clone()
    };
    assert_eq!(
        interrupted,
        vec![
            (expected_growing.clone(), "alice".to_string()),
            (expected_silent.clone(), "bob".to_string()),
        ],
        "the answers interrupted"
    );
    let stored = ok!(s.list_messages(&a.id));
    assert_eq!(
        stored,
        vec![question.clone(), expected_growing],
        "chat a after interrupting"
    );
    let stored = ok!(s.list_messages(&b.id));
    assert_eq!(
        stored.iter().map(|m| m.status).collect::<Vec<_>>(),
        [MessageStatus::Complete, MessageStatus::Interrupted],
        "chat b after interrupting"
    );
    assert_eq!(stored[0].content, "Done.", "a finished answer changed");
    assert!(
        ok!(s.interrupt_pending_answers()).is_empty(),
        "interrupting twice found answers again"
    );
    assert!(
        !ok!(s.save_answer_progress(&growing.id, "more", &so_far)),
        "a save reached an interrupted answer"
    );
}

/// The count made at start for answers a dead process left `pending`
/// skips an answer whose run was recorded just before the process died:
/// each run is counted once.
pub async fn interrupted_answers_are_counted_once(s: &dyn Store) {
    let a = chat("alice", "a", false, 1);
    ok!(s.create_chat(&a));
    let mut answers = Vec::new();
    for minutes in [2, 3] {
        let mut answer = message(&a.id, MessageRole::Assistant, "", minutes);
        answer.status = MessageStatus::Pending;
        answer.model = Some("m-a".to_string());
        ok!(s.add_message(&answer));
        let so_far = MessageUsage {
            prompt_tokens: 20,
            cached_tokens: 0,
            completion_tokens: 5,
            time_to_first_token_ms: 40,
            tokens_per_second: 25.0,
        };
        assert!(ok!(s.save_answer_progress(&answer.id, "Once", &so_far)));
        answers.push(answer);
    }
    // The first run ended and was recorded (7 tokens); its answer's end
    // was never stored.
    let today = time::now();
    let recorded = &answers[0];
    ok!(s.record_generation(&Generation {
        id: crate::chat::run_id(&recorded.id, &recorded.created_at),
        user_id: "alice".to_string(),
        model: "m-a".to_string(),
        source: generation_source::CHAT.to_string(),
        prompt_tokens: 20,
        cached_tokens: 0,
        completion_tokens: 7,
        time_to_first_token_ms: Some(40),
        duration_ms: 300,
        status: MessageStatus::Complete,
        at: today,
    }));

    assert_eq!(
        ok!(crate::chat::recover_interrupted(s)),
        2,
        "answers recovered"
    );
    let days = (
        today.date_naive() - Duration::days(1),
        today.date_naive() + Duration::days(1),
    );
    let totals = ok!(s.generation_totals(days.0, days.1, Some("alice")));
    let summed = totals.iter().fold((0, 0), |(n, tokens), t| {
        (n + t.generations, tokens + t.completion_tokens)
    });
    assert_eq!(
        summed,
        (2, 7 + 5),
        "one generation per run: the recorded one as recorded, the other from its saved usage"
    );
    assert_eq!(
        ok!(s.list_messages(&a.id))
            .iter()
            .map(|m| m.status)
            .collect::<Vec<_>>(),
        [MessageStatus::Interrupted, MessageStatus::Interrupted],
        "both answers interrupted"
    );
}

// ---------------------------------------------------------------------------
// tickets

/// Tickets get numbers 1, 2, 3 and read back by id and by number.
pub async fn ticket_numbers_are_sequential(s: &dyn Store) {
    let owner = user("alice", "Alice", Role::User, false, 0);
    let mut stored = Vec::new();
    for (i, subject) in ["one", "two", "three"].into_iter().enumerate() {
        let mut t = ticket(&owner, subject, "body", i as i64);
        t.number = 99; // ignored
        let created = ok!(s.create_ticket(&t));
        assert_eq!(created.number, i as i64 + 1, "number of ticket {subject}");
        assert_eq!(
            created,
            Ticket {
                number: i as i64 + 1,
                ..t
            },
            "create_ticket must return the ticket as stored"
        );
        stored.push(created);
    }
    for t in &stored {
        assert_eq!(
            ok!(s.get_ticket(&t.id)),
            Some(t.clone()),
            "get_ticket #{}",
            t.number
        );
        assert_eq!(
            ok!(s.get_ticket_by_number(t.number)),
            Some(t.clone()),
            "get_ticket_by_number({})",
            t.number
        );
    }
    assert_eq!(ok!(s.get_ticket(&new_id())), None, "unknown ticket id");
    assert_eq!(
        ok!(s.get_ticket_by_number(4)),
        None,
        "unknown ticket number"
    );
    assert_eq!(ok!(s.get_ticket_by_number(0)), None, "ticket number 0");
}

/// Concurrently created tickets get distinct numbers 1..=8.
pub async fn ticket_numbers_are_distinct_under_concurrency(s: &dyn Store) {
    let owner = user("alice", "Alice", Role::User, false, 0);
    let tickets: Vec<Ticket> = (0..8)
        .map(|i| ticket(&owner, &format!("concurrent {i}"), "body", i))
        .collect();
    let results = futures::future::join_all(tickets.iter().map(|t| s.create_ticket(t))).await;
    let created: Vec<Ticket> = results
        .into_iter()
        .map(|r| r.expect("concurrent create_ticket failed"))
        .collect();
    let numbers: Vec<i64> = created.iter().map(|t| t.number).collect();
    let distinct: BTreeSet<i64> = numbers.iter().copied().collect();
    assert_eq!(
        distinct,
        (1..=8).collect::<BTreeSet<i64>>(),
        "concurrent create_ticket numbers {numbers:?}"
    );
    for t in &created {
        assert_eq!(
            ok!(s.get_ticket_by_number(t.number)),
            Some(t.clone()),
            "get_ticket_by_number({})",
            t.number
        );
    }
    let next = ok!(s.create_ticket(&ticket(&owner, "after", "body", 10)));
    assert_eq!(next.number, 9, "the ticket after eight concurrent ones");
}

/// `update_ticket` changes only the fields it names and returns the ticket
/// as stored; with `expected_status` it applies only while the status is
/// still that one, so of two racing transitions one wins; a missing ticket
/// is `NotFound`.
pub async fn ticket_update(s: &dyn Store) {
    let owner = user("alice", "Alice", Role::User, false, 0);
    let created = ok!(s.create_ticket(&ticket(&owner, "Broken", "It broke", 0)));
    let other = ok!(s.create_ticket(&ticket(&owner, "Other", "Untouched", 1)));
    let changes = TicketUpdate {
        status: Some(TicketStatus::Resolved),
        expected_status: Some(TicketStatus::Open),
        priority: Some(TicketPriority::Urgent),
        category: Some(TicketCategory::Bug),
        assignee: Some(Some(("staff-1".to_string(), "sam".to_string()))),
        resolved_at: Some(Some(ts(30))),
        updated_at: Some(ts(30)),
    };
    let changed = Ticket {
        category: TicketCategory::Bug,
        priority: TicketPriority::Urgent,
        status: TicketStatus::Resolved,
        assignee_id: Some("staff-1".to_string()),
        assignee_username: Some("sam".to_string()),
        updated_at: ts(30),
        resolved_at: Some(ts(30)),
        ..created.clone()
    };
    assert_eq!(
        ok!(s.update_ticket(&created.id, &changes)),
        Some(changed.clone()),
        "update_ticket's result"
    );
    assert_eq!(
        ok!(s.get_ticket(&created.id)),
        Some(changed.clone()),
        "ticket after update"
    );
    assert_eq!(
        ok!(s.get_ticket_by_number(created.number)),
        Some(changed.clone()),
        "ticket by number after update"
    );

    // A transition read against a status that has moved on does nothing.
    let stale = TicketUpdate {
        status: Some(TicketStatus::InProgress),
        expected_status: Some(TicketStatus::Open),
        priority: Some(TicketPriority::Low),
        updated_at: Some(ts(35)),
        ..Default::default()
    };
    assert_eq!(
        ok!(s.update_ticket(&created.id, &stale)),
        None,
        "a transition from a status the ticket no longer has"
    );
    assert_eq!(
        ok!(s.get_ticket(&created.id)),
        Some(changed.clone()),
        "a refused transition changed the ticket"
    );

    // A touch (a comment) leaves the status as stored.
    let touched = ok!(s.update_ticket(
        &created.id,
        &TicketUpdate {
            updated_at: Some(ts(36)),
            ..Default::default()
        }
    ));
    assert_eq!(
        touched,
        Some(Ticket {
            updated_at: ts(36),
            ..changed.clone()
        }),
        "a touch changed more than updated_at"
    );

    // Of two concurrent transitions from the same status, one applies.
    let close = TicketUpdate {
        status: Some(TicketStatus::Closed),
        expected_status: Some(TicketStatus::Resolved),
        ..Default::default()
    };
    let reopen = TicketUpdate {
        status: Some(TicketStatus::Open),
        expected_status: Some(TicketStatus::Resolved),
        resolved_at: Some(None),
        ..Default::default()
    };
    let (closed, reopened) = futures::join!(
        s.update_ticket(&created.id, &close),
        s.update_ticket(&created.id, &reopen)
    );
    let (closed, reopened) = (
        closed.unwrap_or_else(|e| panic!("close failed: {e}")),
        reopened.unwrap_or_else(|e| panic!("reopen failed: {e}")),
    );
    assert!(
        closed.is_some() != reopened.is_some(),
        "both or neither of two racing transitions applied: {closed:?} {reopened:?}"
    );
    let now = ok!(s.get_ticket(&created.id)).unwrap_or_else(|| panic!("ticket gone"));
    let winner = closed.or(reopened).unwrap_or_else(|| panic!("no winner"));
    assert_eq!(now, winner, "the stored ticket is the winner's");

    // Clearing optional fields.
    let cleared = ok!(s.update_ticket(
        &created.id,
        &TicketUpdate {
            assignee: Some(None),
            resolved_at: Some(None),
            ..Default::default()
        }
    ))
    .unwrap_or_else(|| panic!("clearing fields refused"));
    assert_eq!(
        (
            cleared.assignee_id,
            cleared.assignee_username,
            cleared.resolved_at
        ),
        (None, None, None),
        "ticket after clearing optional fields"
    );
    assert_eq!(cleared.subject, "Broken", "clearing changed the subject");
    assert_eq!(
        ok!(s.get_ticket(&other.id)),
        Some(other),
        "another ticket changed"
    );

    let ghost = ticket(&owner, "Ghost", "none", 5);
    expect_not_found(
        s.update_ticket(&ghost.id, &changes).await,
        "update_ticket of a missing ticket",
    );
    expect_not_found(
        s.update_ticket(&ghost.id, &TicketUpdate::default()).await,
        "an empty update_ticket of a missing ticket",
    );
    assert_eq!(
        ok!(s.get_ticket(&ghost.id)),
        None,
        "update created a ticket"
    );
}

/// Filters by status, category, assignee (and unassigned), owner and search;
/// most recently updated first; pages with the total.
pub async fn ticket_list_filters_and_order(s: &dyn Store) {
    let alice = user("alice", "Alice", Role::User, false, 0);
    let bob = user("bob", "Bob", Role::User, false, 0);
    let spec = |owner: &User,
                subject: &str,
                body: &str,
                status: TicketStatus,
                category: TicketCategory,
                assignee: Option<&str>,
                minutes: i64| {
        let mut t = ticket(owner, subject, body, 0);
        t.status = status;
        t.category = category;
        t.assignee_id = assignee.map(str::to_string);
        t.assignee_username = assignee.map(|a| format!("staff-{a}"));
        t.updated_at = ts(minutes);
        t
    };
    use TicketCategory as C;
    use TicketStatus as S;
    let specs = [
        spec(
            &alice,
            "Login fails",
            "password rejected",
            S::Open,
            C::Account,
            None,
            10,
        ),
        spec(
            &alice,
            "Model slow",
            "answers take a MINUTE",
            S::InProgress,
            C::Model,
            Some("s1"),
            30,
        ),
        spec(
            &bob,
            "Crash on start",
            "stack trace attached",
            S::Open,
            C::Bug,
            Some("s2"),
            20,
        ),
        spec(
            &bob,
            "Dark mode",
            "please add a dark mode",
            S::Closed,
            C::FeatureRequest,
            Some("s1"),
            50,
        ),
        spec(
            &alice,
            "100% cpu",
            "fan is loud",
            S::Resolved,
            C::Bug,
            None,
            40,
        ),
    ];
    let mut created = Vec::new();
    for t in &specs {
        created.push(ok!(s.create_ticket(t)));
    }
    let by_subject = |subject: &str| {
        created
            .iter()
            .find(|t| t.subject == subject)
            .cloned()
            .expect("known subject")
    };

    let page = ok!(s.list_tickets(&all_tickets()));
    assert_eq!(
        subjects(&page.items),
        [
            "Dark mode",
            "100% cpu",
            "Model slow",
            "Crash on start",
            "Login fails"
        ],
        "all tickets, updated_at desc"
    );
    assert_eq!(page.total, 5, "total");
    let want: Vec<Ticket> = [
        "Dark mode",
        "100% cpu",
        "Model slow",
        "Crash on start",
        "Login fails",
    ]
    .into_iter()
    .map(by_subject)
    .collect();
    assert_eq!(page.items, want, "ticket records");

    let cases: Vec<(&str, TicketQuery, Vec<&str>)> = vec![
        (
            "status open",
            TicketQuery {
                status: Some(TicketStatus::Open),
                ..all_tickets()
            },
            vec!["Crash on start", "Login fails"],
        ),
        (
            "category bug",
            TicketQuery {
                category: Some(TicketCategory::Bug),
                ..all_tickets()
            },
            vec!["100% cpu", "Crash on start"],
        ),
        (
            "assignee s1",
            TicketQuery {
                assignee_id: Some(Some("s1".into())),
                ..all_tickets()
            },
            vec!["Dark mode", "Model slow"],
        ),
        (
            "unassigned",
            TicketQuery {
                assignee_id: Some(None),
                ..all_tickets()
            },
            vec!["100% cpu", "Login fails"],
        ),
        (
            "owner bob",
            TicketQuery {
                owner_id: Some(bob.id.clone()),
                ..all_tickets()
            },
            vec!["Dark mode", "Crash on start"],
        ),
        (
            "search subject, any case",
            TicketQuery {
                search: Some("mODEL".into()),
                ..all_tickets()
            },
            vec!["Model slow"],
        ),
        (
            "search body, any case",
            TicketQuery {
                search: Some("minute".into()),
                ..all_tickets()
            },
            vec!["Model slow"],
        ),
        (
            "search subject or body",
            TicketQuery {
                search: Some("dark".into()),
                ..all_tickets()
            },
            vec!["Dark mode"],
        ),
        (
            "search % literally",
            TicketQuery {
                search: Some("0%".into()),
                ..all_tickets()
            },
            vec!["100% cpu"],
        ),
        (
            "search . literally",
            TicketQuery {
                search: Some("a.".into()),
                ..all_tickets()
            },
            vec![],
        ),
        (
            "owner alice + status open",
            TicketQuery {
                owner_id: Some(alice.id.clone()),
                status: Some(TicketStatus::Open),
                ..all_tickets()
            },
            vec!["Login fails"],
        ),
        (
            "owner alice + unassigned + bug",
            TicketQuery {
                owner_id: Some(alice.id.clone()),
                assignee_id: Some(None),
                category: Some(TicketCategory::Bug),
                ..all_tickets()
            },
            vec!["100% cpu"],
        ),
        (
            "status closed + owner alice",
            TicketQuery {
                owner_id: Some(alice.id.clone()),
                status: Some(TicketStatus::Closed),
                ..all_tickets()
            },
            vec![],
        ),
    ];
    for (what, query, want) in cases {
        let page = ok!(s.list_tickets(&query));
        assert_eq!(subjects(&page.items), want, "list_tickets {what}");
        assert_eq!(
            page.total,
            want.len() as u64,
            "total of list_tickets {what}"
        );
    }

    let page = ok!(s.list_tickets(&TicketQuery {
        limit: 2,
        offset: 2,
        ..Default::default()
    }));
    assert_eq!(
        subjects(&page.items),
        ["Model slow", "Crash on start"],
        "limit 2 offset 2"
    );
    assert_eq!(page.total, 5, "total with limit 2 offset 2");

    let page = ok!(s.list_tickets(&TicketQuery {
        owner_id: Some(alice.id.clone()),
        limit: 1,
        offset: 1,
        ..Default::default()
    }));
    assert_eq!(
        subjects(&page.items),
        ["Model slow"],
        "alice, limit 1 offset 1"
    );
    assert_eq!(page.total, 3, "alice's total with a page");
}

// ---------------------------------------------------------------------------
// comments

/// Comments list oldest first; internal notes only when asked.
pub async fn comment_order_and_internal(s: &dyn Store) {
    let owner = user("alice", "Alice", Role::User, false, 0);
    let t1 = ok!(s.create_ticket(&ticket(&owner, "first", "body", 0)));
    let t2 = ok!(s.create_ticket(&ticket(&owner, "second", "body", 1)));
    let t3 = ok!(s.create_ticket(&ticket(&owner, "third", "body", 2)));
    let comment = |ticket_id: &str, body: &str, internal: bool, minutes: i64| Comment {
        id: new_id(),
        ticket_id: ticket_id.to_string(),
        author_id: if internal { "staff" } else { "alice" }.to_string(),
        author_username: if internal { "sam" } else { "alice" }.to_string(),
        author_is_staff: internal,
        body: body.to_string(),
        internal,
        created_at: ts(minutes),
    };
    let c1 = comment(&t1.id, "first public", false, 1);
    let c2 = comment(&t1.id, "internal note", true, 3);
    let c3 = comment(&t1.id, "second public", false, 2);
    let c4 = comment(&t1.id, "last public", false, 4);
    let other = comment(&t2.id, "other ticket", false, 0);
    // Added out of order.
    for c in [&c4, &c1, &c2, &c3, &other] {
        ok!(s.add_comment(c));
    }
    assert_eq!(
        ok!(s.list_comments(&t1.id, false)),
        vec![c1.clone(), c3.clone(), c4.clone()],
        "public comments, oldest first"
    );
    assert_eq!(
        ok!(s.list_comments(&t1.id, true)),
        vec![c1, c3, c2, c4],
        "all comments, oldest first"
    );
    assert_eq!(
        ok!(s.list_comments(&t2.id, true)),
        vec![other],
        "another ticket"
    );
    assert!(
        ok!(s.list_comments(&t3.id, true)).is_empty(),
        "a ticket without comments"
    );
}

// ---------------------------------------------------------------------------
// usage

/// Per-day counts by kind and distinct active users, over an inclusive
/// range, optionally for one user.
pub async fn usage_daily_counts(s: &dyn Store) {
    use usage_kind::{CHAT_CREATED, LOGIN, MESSAGE_CREATED};
    let events = [
        // Just outside the range on both sides.
        ("u1", LOGIN, "2031-02-28T23:59:59.999Z"),
        ("u1", LOGIN, "2031-03-04T00:00:00.000Z"),
        // 2031-03-01
        ("u1", LOGIN, "2031-03-01T00:00:00.000Z"),
        ("u1", LOGIN, "2031-03-01T10:00:00.000Z"),
        ("u2", LOGIN, "2031-03-01T11:00:00.000Z"),
        ("u1", CHAT_CREATED, "2031-03-01T12:00:00.000Z"),
        // 2031-03-02
        ("u2", MESSAGE_CREATED, "2031-03-02T08:00:00.000Z"),
        ("u2", MESSAGE_CREATED, "2031-03-02T23:59:59.999Z"),
        // 2031-03-03
        ("u3", LOGIN, "2031-03-03T12:30:00.000Z"),
        ("u1", MESSAGE_CREATED, "2031-03-03T23:59:59.999Z"),
    ];
    for (user_id, kind, at) in events {
        ok!(s.record_usage(&UsageEvent {
            id: new_id(),
            user_id: user_id.to_string(),
            kind: kind.to_string(),
            at: t(at),
        }));
    }
    let count = |d: &str, kind: &str, count: u64| DailyCount {
        day: day(d),
        kind: kind.to_string(),
        count,
    };

    let all = ok!(s.usage_daily(day("2031-03-01"), day("2031-03-03"), None));
    assert_eq!(
        all.counts,
        vec![
            count("2031-03-01", LOGIN, 3),
            count("2031-03-01", CHAT_CREATED, 1),
            count("2031-03-02", MESSAGE_CREATED, 2),
            count("2031-03-03", LOGIN, 1),
            count("2031-03-03", MESSAGE_CREATED, 1),
        ],
        "counts over 03-01..=03-03, by day then kind"
    );
    assert_eq!(
        all.active_users,
        vec![
            (day("2031-03-01"), 2),
            (day("2031-03-02"), 1),
            (day("2031-03-03"), 2),
        ],
        "distinct active users per day"
    );

    let u1 = ok!(s.usage_daily(day("2031-03-01"), day("2031-03-03"), Some("u1")));
    assert_eq!(
        u1,
        UsageDaily {
            counts: vec![
                count("2031-03-01", LOGIN, 2),
                count("2031-03-01", CHAT_CREATED, 1),
                count("2031-03-03", MESSAGE_CREATED, 1),
            ],
            active_users: vec![(day("2031-03-01"), 1), (day("2031-03-03"), 1)],
        },
        "usage of u1"
    );

    let one_day = ok!(s.usage_daily(day("2031-03-02"), day("2031-03-02"), None));
    assert_eq!(
        one_day,
        UsageDaily {
            counts: vec![count("2031-03-02", MESSAGE_CREATED, 2)],
            active_users: vec![(day("2031-03-02"), 1)],
        },
        "a one-day range includes the whole day"
    );

    let edges = ok!(s.usage_daily(day("2031-02-28"), day("2031-02-28"), None));
    assert_eq!(
        edges,
        UsageDaily {
            counts: vec![count("2031-02-28", LOGIN, 1)],
            active_users: vec![(day("2031-02-28"), 1)],
        },
        "the last millisecond of a day belongs to that day"
    );

    let none = ok!(s.usage_daily(day("2031-04-01"), day("2031-04-30"), None));
    assert_eq!(none, UsageDaily::default(), "a range without events");
    let nobody = ok!(s.usage_daily(day("2031-03-01"), day("2031-03-03"), Some("u9")));
    assert_eq!(nobody, UsageDaily::default(), "a user without events");
}

// ---------------------------------------------------------------------------
// audit

/// The audit log lists newest first, filters by actor and action, pages.
pub async fn generation_totals_per_day_and_model(s: &dyn Store) {
    let generations = [
        // (user, model, status, prompt, completion, ttft, duration, at)
        (
            "u1",
            "m-a",
            MessageStatus::Complete,
            10,
            5,
            Some(100),
            1_000,
            "2031-02-28T23:59:59.999Z",
        ),
        (
            "u1",
            "m-a",
            MessageStatus::Complete,
            10,
            20,
            Some(200),
            2_000,
            "2031-03-01T00:00:00.000Z",
        ),
        (
            "u2",
            "m-a",
            MessageStatus::Cancelled,
            7,
            3,
            Some(50),
            500,
            "2031-03-01T09:00:00.000Z",
        ),
        (
            "u2",
            "m-a",
            MessageStatus::Failed,
            0,
            0,
            None,
            10,
            "2031-03-01T10:00:00.000Z",
        ),
        (
            "u1",
            "m-b",
            MessageStatus::Complete,
            4,
            8,
            Some(30),
            400,
            "2031-03-01T23:59:59.999Z",
        ),
        (
            "u1",
            "m-a",
            MessageStatus::Complete,
            1,
            2,
            Some(10),
            100,
            "2031-03-02T12:00:00.000Z",
        ),
    ];
    let mut recorded = Vec::new();
    for (user_id, model, status, prompt, completion, ttft, duration, at) in generations {
        let generation = Generation {
            id: new_id(),
            user_id: user_id.to_string(),
            model: model.to_string(),
            source: generation_source::CHAT.to_string(),
            prompt_tokens: prompt,
            cached_tokens: 0,
            completion_tokens: completion,
            time_to_first_token_ms: ttft,
            duration_ms: duration,
            status,
            at: t(at),
        };
        ok!(s.record_generation(&generation));
        recorded.push(generation);
    }
    // A generation is counted once: its id recorded again (a count made
    // again after a crash) is refused and changes no total.
    let again = Generation {
        completion_tokens: 1_000,
        ..recorded[0].clone()
    };
    let refused = s.record_generation(&again).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "a generation recorded twice: {refused:?}"
    );
    let all = ok!(s.generation_totals(day("2031-03-01"), day("2031-03-02"), None));
    let want = vec![
        GenerationTotals {
            day: day("2031-03-01"),
            model: "m-a".to_string(),
            generations: 3,
            failed: 1,
            prompt_tokens: 17,
            cached_prompt_tokens: 0,
            completion_tokens: 23,
            ttft_sum_ms: 250,
            ttft_count: 2,
            duration_ms: 2_510,
        },
        GenerationTotals {
            day: day("2031-03-01"),
            model: "m-b".to_string(),
            generations: 1,
            failed: 0,
            prompt_tokens: 4,
            cached_prompt_tokens: 0,
            completion_tokens: 8,
            ttft_sum_ms: 30,
            ttft_count: 1,
            duration_ms: 400,
        },
        GenerationTotals {
            day: day("2031-03-02"),
            model: "m-a".to_string(),
            generations: 1,
            failed: 0,
            prompt_tokens: 1,
            cached_prompt_tokens: 0,
            completion_tokens: 2,
            ttft_sum_ms: 10,
            ttft_count: 1,
            duration_ms: 100,
        },
    ];
    assert_eq!(all, want, "all users");

    let u2 = ok!(s.generation_totals(day("2031-03-01"), day("2031-03-01"), Some("u2")));
    assert_eq!(
        u2,
        vec![GenerationTotals {
            day: day("2031-03-01"),
            model: "m-a".to_string(),
            generations: 2,
            failed: 1,
            prompt_tokens: 7,
            cached_prompt_tokens: 0,
            completion_tokens: 3,
            ttft_sum_ms: 50,
            ttft_count: 1,
            duration_ms: 510,
        }],
        "one user, one day"
    );
    assert!(
        ok!(s.generation_totals(day("2031-03-03"), day("2031-03-09"), None)).is_empty(),
        "days without generations"
    );
    assert!(
        ok!(s.generation_totals(day("2031-03-02"), day("2031-03-01"), None)).is_empty(),
        "an empty range"
    );
}

/// Prompt tokens taken from a model's cache are summed per day and model
/// like the prompt tokens they are part of.
pub async fn generation_totals_sum_cached_prompt_tokens(s: &dyn Store) {
    let generations = [
        // (user, model, status, prompt, cached, at)
        (
            "u1",
            "m-a",
            MessageStatus::Complete,
            100,
            90,
            "2031-03-01T08:00:00.000Z",
        ),
        (
            "u1",
            "m-a",
            MessageStatus::Complete,
            50,
            0,
            "2031-03-01T09:00:00.000Z",
        ),
        (
            "u2",
            "m-a",
            MessageStatus::Cancelled,
            40,
            30,
            "2031-03-01T10:00:00.000Z",
        ),
        (
            "u2",
            "m-a",
            MessageStatus::Failed,
            0,
            0,
            "2031-03-01T11:00:00.000Z",
        ),
        (
            "u1",
            "m-b",
            MessageStatus::Complete,
            20,
            20,
            "2031-03-01T12:00:00.000Z",
        ),
        (
            "u1",
            "m-a",
            MessageStatus::Complete,
            10,
            5,
            "2031-03-02T00:00:00.000Z",
        ),
    ];
    for (user_id, model, status, prompt, cached, at) in generations {
        ok!(s.record_generation(&Generation {
            id: new_id(),
            user_id: user_id.to_string(),
            model: model.to_string(),
            source: generation_source::CHAT.to_string(),
            prompt_tokens: prompt,
            cached_tokens: cached,
            completion_tokens: 1,
            time_to_first_token_ms: Some(10),
            duration_ms: 100,
            status,
            at: t(at),
        }));
    }
    let sums = |rows: &[GenerationTotals]| -> Vec<(String, String, u64, u64)> {
        rows.iter()
            .map(|r| {
                (
                    r.day.to_string(),
                    r.model.clone(),
                    r.prompt_tokens,
                    r.cached_prompt_tokens,
                )
            })
            .collect()
    };
    let all = ok!(s.generation_totals(day("2031-03-01"), day("2031-03-02"), None));
    assert_eq!(
        sums(&all),
        vec![
            ("2031-03-01".to_string(), "m-a".to_string(), 190, 120),
            ("2031-03-01".to_string(), "m-b".to_string(), 20, 20),
            ("2031-03-02".to_string(), "m-a".to_string(), 10, 5),
        ],
        "all users"
    );
    let u1 = ok!(s.generation_totals(day("2031-03-01"), day("2031-03-01"), Some("u1")));
    assert_eq!(
        sums(&u1),
        vec![
            ("2031-03-01".to_string(), "m-a".to_string(), 150, 90),
            ("2031-03-01".to_string(), "m-b".to_string(), 20, 20),
        ],
        "one user, one day"
    );
}

pub async fn audit_list(s: &dyn Store) {
    let entry = |minutes: i64, actor: &str, action: &str, target: &str| AuditEntry {
        id: new_id(),
        at: ts(minutes),
        actor_id: format!("id-{actor}"),
        actor_username: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        details: json!({ "minutes": minutes, "nested": { "list": [1, "two", null, true] } }),
    };
    let e1 = entry(1, "root", "user.create", "u1");
    let e2 = entry(2, "root", "user.role", "u1");
    let e3 = entry(3, "ada", "user.create", "u2");
    let e4 = entry(4, "ada", "settings.update", "registration");
    let e5 = entry(5, "root", "user.disable", "u2");
    // Appended out of order.
    for e in [&e3, &e1, &e5, &e2, &e4] {
        ok!(s.append_audit(e));
    }
    let page = ok!(s.list_audit(&all_audit()));
    assert_eq!(
        page.items,
        vec![e5.clone(), e4.clone(), e3.clone(), e2.clone(), e1.clone()],
        "audit newest first"
    );
    assert_eq!(page.total, 5, "audit total");

    let page = ok!(s.list_audit(&AuditQuery {
        actor_id: Some("id-root".into()),
        ..all_audit()
    }));
    assert_eq!(
        page.items,
        vec![e5.clone(), e2.clone(), e1.clone()],
        "actor root"
    );
    assert_eq!(page.total, 3, "actor root total");

    let page = ok!(s.list_audit(&AuditQuery {
        action: Some("user.create".into()),
        ..all_audit()
    }));
    assert_eq!(
        page.items,
        vec![e3.clone(), e1.clone()],
        "action user.create"
    );
    assert_eq!(page.total, 2, "action user.create total");

    let page = ok!(s.list_audit(&AuditQuery {
        actor_id: Some("id-ada".into()),
        action: Some("user.create".into()),
        ..all_audit()
    }));
    assert_eq!(
        page.items,
        vec![e3.clone()],
        "actor ada + action user.create"
    );
    assert_eq!(page.total, 1, "actor ada + action user.create total");

    let page = ok!(s.list_audit(&AuditQuery {
        action: Some("user".into()),
        ..all_audit()
    }));
    assert!(
        page.items.is_empty(),
        "the action filter is exact, not a substring: {:?}",
        page.items
    );

    let page = ok!(s.list_audit(&AuditQuery {
        limit: 2,
        offset: 1,
        ..Default::default()
    }));
    assert_eq!(page.items, vec![e4, e3], "audit limit 2 offset 1");
    assert_eq!(page.total, 5, "audit total with a page");

    let page = ok!(s.list_audit(&AuditQuery {
        actor_id: Some("id-root".into()),
        limit: 2,
        offset: 2,
        ..Default::default()
    }));
    assert_eq!(page.items, vec![e1], "actor root, limit 2 offset 2");
    assert_eq!(page.total, 3, "actor root total with a page");
}

// ---------------------------------------------------------------------------
// settings

/// Settings round-trip any JSON value; a put overwrites.
pub async fn settings_round_trip(s: &dyn Store) {
    assert_eq!(ok!(s.get_setting("missing")), None, "a missing setting");
    let values = [
        ("flag", json!(true)),
        ("off", json!(false)),
        ("int", json!(42)),
        ("negative", json!(-7)),
        ("float", json!(1.5)),
        ("text", json!("hello, world")),
        ("array", json!([1, "two", null])),
        (
            "object",
            json!({ "registration": "open", "limits": { "chats": 10, "ratio": 0.25 }, "tags": ["a", "b"], "none": null }),
        ),
    ];
    for (key, value) in &values {
        ok!(s.put_setting(key, value));
    }
    for (key, value) in &values {
        assert_eq!(
            ok!(s.get_setting(key)).as_ref(),
            Some(value),
            "setting {key} round trip"
        );
    }
    ok!(s.put_setting("flag", &json!({ "now": "an object" })));
    assert_eq!(
        ok!(s.get_setting("flag")),
        Some(json!({ "now": "an object" })),
        "overwritten setting"
    );
    ok!(s.put_setting("text", &json!("second")));
    assert_eq!(
        ok!(s.get_setting("text")),
        Some(json!("second")),
        "overwritten text"
    );
    assert_eq!(
        ok!(s.get_setting("int")),
        Some(json!(42)),
        "other settings kept"
    );
}

/// A swap writes only over the value it was given, as read back; a
/// missing setting is created once; of writers racing from one read,
/// exactly one wins.
pub async fn settings_swap(s: &dyn Store) {
    let first = json!([{ "name": "a", "url": "http://a:7000", "at": 1_767_000_000_000_i64 }]);
    assert!(
        ok!(s.swap_setting("list", None, &first)),
        "creating a missing setting"
    );
    assert!(
        !ok!(s.swap_setting("list", None, &json!([]))),
        "creating it again"
    );
    assert_eq!(
        ok!(s.get_setting("list")),
        Some(first.clone()),
        "after a second create"
    );

    let second = json!([
        { "name": "a", "url": "http://a:7000", "at": 1_767_000_000_000_i64 },
        { "name": "b", "url": "http://b:7000", "at": 1_767_000_000_001_i64 },
    ]);
    assert!(
        !ok!(s.swap_setting("list", Some(&json!([])), &second)),
        "a swap from a stale value"
    );
    assert_eq!(
        ok!(s.get_setting("list")),
        Some(first.clone()),
        "after a stale swap"
    );
    let read = ok!(s.get_setting("list")).expect("the setting");
    assert!(
        ok!(s.swap_setting("list", Some(&read), &second)),
        "a swap from the read value"
    );
    assert_eq!(
        ok!(s.get_setting("list")),
        Some(second.clone()),
        "after the swap"
    );

    let read = ok!(s.get_setting("list")).expect("the setting");
    let (x, y) = (json!(["x"]), json!(["y"]));
    let (a, b) = futures::join!(
        s.swap_setting("list", Some(&read), &x),
        s.swap_setting("list", Some(&read), &y)
    );
    let (a, b) = (a.expect("swap x"), b.expect("swap y"));
    assert!(
        a != b,
        "exactly one of two racing swaps wins (x: {a}, y: {b})"
    );
    let winner = if a { x } else { y };
    assert_eq!(
        ok!(s.get_setting("list")),
        Some(winner),
        "the winner's value"
    );

    ok!(s.put_setting("other", &json!(1)));
    assert!(
        !ok!(s.swap_setting("other", Some(&json!(2)), &json!(3))),
        "a swap over another value"
    );
    assert_eq!(
        ok!(s.get_setting("other")),
        Some(json!(1)),
        "untouched by it"
    );
}

fn model(name: &str, minutes: i64) -> ModelRecord {
    ModelRecord {
        id: new_id(),
        name: name.to_string(),
        backend: "llama".to_string(),
        kind: ModelKind::Chat,
        source: format!("https://example.com/{name}.gguf"),
        sha256: Some("ab".repeat(32)),
        file_path: None,
        size_bytes: None,
        status: ModelStatus::Downloading,
        error: None,
        description: "A test model — ünïcode".to_string(),
        context_length: 4096,
        threads: 0,
        slots: 4,
        sampling: corral_sdk::backend::SamplingParams {
            temperature: 0.3,
            top_p: 0.95,
            seed: Some(u64::from(u32::MAX) + 7),
            stop: vec!["</s>".to_string()],
            ..Default::default()
        },
        chat_template: Some("{{ messages }}".to_string()),
        access: ModelAccess {
            everyone: false,
            roles: vec![Role::Admin],
            users: vec!["u1".to_string(), "u2".to_string()],
        },
        created_at: ts(minutes),
        updated_at: ts(minutes),
        upstream_model: Some("org/upstream-name".to_string()),
        api_key: Some("sk-test-ünïcode".to_string()),
        tls_fingerprint: Some(crate::tls::show(&[0xab; 32])),
        fallbacks: vec!["other".to_string()],
        replicas: vec!["twin".to_string()],
        node: None,
    }
}

fn model_names(models: &[ModelRecord]) -> Vec<&str> {
    models.iter().map(|m| m.name.as_str()).collect()
}

/// Models round-trip every field; names are unique.
pub async fn model_round_trip_and_name_conflict(s: &dyn Store) {
    let m = model("gemma-3-270m:q4", 0);
    ok!(s.create_model(&m));
    assert_eq!(ok!(s.get_model(&m.id)).as_ref(), Some(&m), "by id");
    assert_eq!(
        ok!(s.get_model_by_name("gemma-3-270m:q4")).as_ref(),
        Some(&m),
        "by name"
    );
    assert_eq!(ok!(s.get_model("missing")), None, "a missing id");
    assert_eq!(
        ok!(s.get_model_by_name("GEMMA-3-270M:Q4")),
        None,
        "names compare exactly"
    );
    let clash = model("gemma-3-270m:q4", 1);
    expect_conflict(s.create_model(&clash).await, "a second model with the name");
    assert_eq!(ok!(s.list_models()).len(), 1, "the clash was not stored");
}

/// Updates replace the record, renames keep names unique, deletes report
/// whether they removed something, lists are ordered by name.
pub async fn model_update_delete_and_order(s: &dyn Store) {
    let b = model("b-model", 0);
    let a = model("a-model", 1);
    let c = model("c-model", 2);
    for m in [&b, &a, &c] {
        ok!(s.create_model(m));
    }
    assert_eq!(
        model_names(&ok!(s.list_models())),
        ["a-model", "b-model", "c-model"],
        "ordered by name"
    );
    let mut ready = b.clone();
    ready.status = ModelStatus::Ready;
    ready.file_path = Some("/data/models/b/b-model.gguf".to_string());
    ready.size_bytes = Some(5_000_000_000);
    ready.sha256 = None;
    ready.chat_template = None;
    ready.access = ModelAccess::default();
    ready.updated_at = ts(10);
    ok!(s.update_model(&ready));
    assert_eq!(ok!(s.get_model(&b.id)), Some(ready.clone()), "updated");
    let mut renamed = ready.clone();
    renamed.name = "a-model".to_string();
    expect_conflict(s.update_model(&renamed).await, "a rename onto a taken name");
    assert_eq!(ok!(s.get_model(&b.id)), Some(ready.clone()), "kept");
    renamed.name = "z-model".to_string();
    ok!(s.update_model(&renamed));
    assert_eq!(
        model_names(&ok!(s.list_models())),
        ["a-model", "c-model", "z-model"],
        "after the rename"
    );
    assert_eq!(ok!(s.get_model_by_name("b-model")), None, "old name free");
    expect_not_found(
        s.update_model(&model("ghost", 3)).await,
        "an update of a missing model",
    );
    assert!(ok!(s.delete_model(&a.id)), "a delete");
    assert!(!ok!(s.delete_model(&a.id)), "a second delete");
    assert_eq!(
        model_names(&ok!(s.list_models())),
        ["c-model", "z-model"],
        "after the delete"
    );
}

// ---------------------------------------------------------------------------
// plugins

fn plugin(id: &str, minutes: i64) -> PluginRecord {
    PluginRecord {
        id: id.to_string(),
        manifest: format!(
            "id = \"{id}\"\nname = \"Plugin — ünïcode\"\nversion = \"0.1.0\"\napi = \"0.1.0\"\n"
        ),
        component_sha256: "cd".repeat(32),
        enabled: true,
        optional: false,
        approved: vec!["log".to_string(), "kv".to_string()],
        approved_hosts: Vec::new(),
        private_network: false,
        models: None,
        config: json!({
            "email": true,
            "api_key": "s3cret",
            "limits": { "ratio": 0.25, "max": 9_007_199_254_740_993_i64, "tags": ["a", "b"] },
            "none": null,
        }),
        disabled_reason: None,
        installed_by: "tech-1".to_string(),
        installed_at: ts(minutes),
        updated_at: ts(minutes),
    }
}

fn plugin_ids(plugins: &[PluginRecord]) -> Vec<&str> {
    plugins.iter().map(|p| p.id.as_str()).collect()
}

/// Plugins round-trip every field (an empty model list is not "every
/// model"); a put with a taken id replaces the plugin; lists go by id.
pub async fn plugin_round_trip_and_replace(s: &dyn Store) {
    assert_eq!(ok!(s.get_plugin("missing")), None, "a missing plugin");
    assert!(ok!(s.list_plugins()).is_empty(), "no plugins yet");
    let b = plugin("b-plugin", 0);
    let a = plugin("a-plugin", 1);
    let mut c = plugin("c-plugin", 2);
    c.optional = true;
    c.enabled = false;
    c.models = Some(Vec::new());
    c.disabled_reason = Some("trapped 5 times in a row".to_string());
    c.config = json!({});
    for p in [&b, &a, &c] {
        ok!(s.put_plugin(p));
    }
    assert_eq!(
        plugin_ids(&ok!(s.list_plugins())),
        ["a-plugin", "b-plugin", "c-plugin"],
        "ordered by id"
    );
    for p in [&a, &b, &c] {
        assert_eq!(ok!(s.get_plugin(&p.id)).as_ref(), Some(p), "{} by id", p.id);
    }
    assert_eq!(
        ok!(s.get_plugin("c-plugin")).and_then(|p| p.models),
        Some(Vec::new()),
        "an empty model list stays empty"
    );

    let replaced = PluginRecord {
        id: "b-plugin".to_string(),
        manifest: "id = \"b-plugin\"\nversion = \"0.2.0\"\n".to_string(),
        component_sha256: "ef".repeat(32),
        enabled: false,
        optional: true,
        approved: vec!["http".to_string()],
        approved_hosts: vec![
            "api.example.com".to_string(),
            "*.wiki.example:*".to_string(),
        ],
        private_network: true,
        models: Some(vec!["gemma-3-270m".to_string(), "other:q4".to_string()]),
        config: json!({ "level": 3, "list": ["x"] }),
        disabled_reason: Some("turned off".to_string()),
        installed_by: "tech-2".to_string(),
        installed_at: ts(10),
        updated_at: ts(11),
    };
    ok!(s.put_plugin(&replaced));
    assert_eq!(
        ok!(s.get_plugin("b-plugin")),
        Some(replaced.clone()),
        "the replaced plugin"
    );
    assert_eq!(
        ok!(s.list_plugins()),
        vec![a, replaced, c],
        "every plugin after the replacement"
    );
}

/// `update_plugin` changes only the fields it names and returns the plugin
/// as stored; a missing plugin is `NotFound`.
pub async fn plugin_update_changes_named_fields(s: &dyn Store) {
    let p = plugin("pii-redact", 0);
    let other = plugin("other", 0);
    ok!(s.put_plugin(&p));
    ok!(s.put_plugin(&other));

    let mut expected = PluginRecord {
        enabled: false,
        disabled_reason: Some("trapped 5 times in a row".to_string()),
        updated_at: ts(5),
        ..p.clone()
    };
    let stored = ok!(s.update_plugin(
        &p.id,
        &PluginUpdate {
            enabled: Some(false),
            disabled_reason: Some(Some("trapped 5 times in a row".to_string())),
            updated_at: Some(ts(5)),
            ..Default::default()
        }
    ));
    assert_eq!(stored, expected, "after turning it off");
    assert_eq!(ok!(s.get_plugin(&p.id)), Some(expected.clone()), "as read");

    expected.optional = true;
    expected.approved = vec!["log".to_string()];
    expected.approved_hosts = vec!["[::1]:8080".to_string()];
    expected.private_network = true;
    expected.models = Some(vec!["gemma-3-270m".to_string()]);
    expected.config = json!({ "email": false, "api_key": "n3w" });
    let stored = ok!(s.update_plugin(
        &p.id,
        &PluginUpdate {
            optional: Some(true),
            approved: Some(vec!["log".to_string()]),
            approved_hosts: Some(vec!["[::1]:8080".to_string()]),
            private_network: Some(true),
            models: Some(Some(vec!["gemma-3-270m".to_string()])),
            config: Some(json!({ "email": false, "api_key": "n3w" })),
            ..Default::default()
        }
    ));
    assert_eq!(stored, expected, "after changing its settings");

    expected.manifest = "id = \"pii-redact\"\nversion = \"0.2.0\"\n".to_string();
    expected.component_sha256 = "01".repeat(32);
    expected.enabled = true;
    expected.disabled_reason = None;
    expected.models = None;
    let stored = ok!(s.update_plugin(
        &p.id,
        &PluginUpdate {
            manifest: Some((expected.manifest.clone(), expected.component_sha256.clone())),
            enabled: Some(true),
            disabled_reason: Some(None),
            models: Some(None),
            ..Default::default()
        }
    ));
    assert_eq!(stored, expected, "after an upgrade");
    assert_eq!(
        ok!(s.update_plugin(&p.id, &PluginUpdate::default())),
        expected,
        "an update without changes"
    );
    assert_eq!(
        ok!(s.get_plugin(&other.id)),
        Some(other),
        "another plugin changed"
    );
    expect_not_found(
        s.update_plugin(
            "ghost",
            &PluginUpdate {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await,
        "update_plugin of a missing plugin",
    );
    assert_eq!(ok!(s.get_plugin("ghost")), None, "the update created it");
}

/// Users turn installed plugins on and off for themselves, each user
/// alone; doing it twice changes nothing; a plugin that is not installed
/// cannot be turned on.
pub async fn plugin_opt_ins(s: &dyn Store) {
    let mut a = plugin("a-plugin", 0);
    a.optional = true;
    let mut b = plugin("b-plugin", 0);
    b.optional = true;
    ok!(s.put_plugin(&b));
    ok!(s.put_plugin(&a));
    assert!(ok!(s.list_user_plugins("u1")).is_empty(), "none yet");

    ok!(s.set_user_plugin("u1", "b-plugin", true));
    ok!(s.set_user_plugin("u1", "a-plugin", true));
    ok!(s.set_user_plugin("u1", "a-plugin", true));
    assert_eq!(
        ok!(s.list_user_plugins("u1")),
        ["a-plugin", "b-plugin"],
        "u1's plugins, by id, each once"
    );
    assert!(
        ok!(s.list_user_plugins("u2")).is_empty(),
        "another user's plugins"
    );
    ok!(s.set_user_plugin("u2", "a-plugin", true));

    ok!(s.set_user_plugin("u1", "a-plugin", false));
    ok!(s.set_user_plugin("u1", "a-plugin", false));
    ok!(s.set_user_plugin("u3", "b-plugin", false));
    assert_eq!(
        ok!(s.list_user_plugins("u1")),
        ["b-plugin"],
        "u1 after turning one off"
    );
    assert_eq!(
        ok!(s.list_user_plugins("u2")),
        ["a-plugin"],
        "u2 after u1 turned it off"
    );

    expect_not_found(
        s.set_user_plugin("u1", "ghost", true).await,
        "turning on a plugin that is not installed",
    );
    ok!(s.set_user_plugin("u1", "ghost", false));
    assert_eq!(
        ok!(s.list_user_plugins("u1")),
        ["b-plugin"],
        "u1 after naming a missing plugin"
    );

    // A new version (a put over the old record) keeps who turned it on.
    a.manifest.push_str("# 0.2.0\n");
    ok!(s.put_plugin(&a));
    assert_eq!(
        ok!(s.list_user_plugins("u2")),
        ["a-plugin"],
        "u2 after the plugin was replaced"
    );
}

/// Deleting a plugin deletes its key-value data and users' opt-ins, and
/// nothing of other plugins; installed again it starts empty.
pub async fn plugin_delete_removes_data_and_opt_ins(s: &dyn Store) {
    let mut a = plugin("a-plugin", 0);
    a.optional = true;
    let mut b = plugin("b-plugin", 0);
    b.optional = true;
    ok!(s.put_plugin(&a));
    ok!(s.put_plugin(&b));
    for (user, id) in [("u1", "a-plugin"), ("u1", "b-plugin"), ("u2", "a-plugin")] {
        ok!(s.set_user_plugin(user, id, true));
    }
    let quota = 1000;
    ok!(s.kv_set("a-plugin", "", "shared", b"one", quota));
    ok!(s.kv_set("a-plugin", "u1", "mine", b"two", quota));
    ok!(s.kv_set("b-plugin", "", "shared", b"three", quota));

    assert!(ok!(s.delete_plugin("a-plugin")), "deleting a plugin");
    assert_eq!(ok!(s.get_plugin("a-plugin")), None, "the deleted plugin");
    assert_eq!(
        plugin_ids(&ok!(s.list_plugins())),
        ["b-plugin"],
        "plugins left"
    );
    assert_eq!(
        ok!(s.list_user_plugins("u1")),
        ["b-plugin"],
        "u1's opt-ins left"
    );
    assert!(
        ok!(s.list_user_plugins("u2")).is_empty(),
        "u2's opt-ins left"
    );
    assert_eq!(ok!(s.kv_get("a-plugin", "", "shared")), None, "shared data");
    assert_eq!(ok!(s.kv_get("a-plugin", "u1", "mine")), None, "user data");
    assert!(
        ok!(s.kv_list("a-plugin", "", "", 100)).is_empty(),
        "keys of the deleted plugin"
    );
    assert_eq!(
        ok!(s.kv_usage("a-plugin")),
        0,
        "usage of the deleted plugin"
    );
    assert_eq!(
        ok!(s.kv_get("b-plugin", "", "shared")),
        Some(b"three".to_vec()),
        "another plugin's data"
    );
    assert_eq!(ok!(s.kv_usage("b-plugin")), 11, "another plugin's usage");
    assert!(!ok!(s.delete_plugin("a-plugin")), "a second delete");

    // Installed again, it has no opt-ins and its whole quota.
    ok!(s.put_plugin(&a));
    assert!(
        ok!(s.list_user_plugins("u2")).is_empty(),
        "opt-ins came back"
    );
    ok!(s.kv_set("a-plugin", "", "k", &[7; 18], 20));
    assert_eq!(ok!(s.kv_usage("a-plugin")), 19, "usage after reinstalling");

    // Data left under an id with no plugin goes too.
    ok!(s.kv_set("ghost", "", "k", b"v", quota));
    assert!(!ok!(s.delete_plugin("ghost")), "deleting a missing plugin");
    assert_eq!(ok!(s.kv_get("ghost", "", "k")), None, "the orphaned data");
    assert_eq!(ok!(s.kv_usage("ghost")), 0, "the orphaned usage");
}

// ---------------------------------------------------------------------------
// plugins' key-value data

const BIG_QUOTA: u64 = 1 << 20;

/// Values are bytes (any, empty included); one plugin never sees
/// another's keys, nor one scope another's.
pub async fn kv_round_trip_and_isolation(s: &dyn Store) {
    assert_eq!(ok!(s.kv_get("p", "", "missing")), None, "a missing key");
    let every_byte: Vec<u8> = (0..=255).collect();
    ok!(s.kv_set("p", "", "bytes", &every_byte, BIG_QUOTA));
    ok!(s.kv_set("p", "", "empty", b"", BIG_QUOTA));
    ok!(s.kv_set("p", "", "ключ/é", "ünïcode".as_bytes(), BIG_QUOTA));
    ok!(s.kv_set("p", "u1", "bytes", b"user one", BIG_QUOTA));
    ok!(s.kv_set("p", "u10", "bytes", b"user ten", BIG_QUOTA));
    ok!(s.kv_set("p2", "", "bytes", b"another plugin", BIG_QUOTA));
    ok!(s.kv_set("p2", "u1", "bytes", b"another plugin's user", BIG_QUOTA));

    assert_eq!(
        ok!(s.kv_get("p", "", "bytes")),
        Some(every_byte.clone()),
        "every byte value"
    );
    assert_eq!(
        ok!(s.kv_get("p", "", "empty")),
        Some(Vec::new()),
        "an empty value is not a missing one"
    );
    assert_eq!(
        ok!(s.kv_get("p", "", "ключ/é")),
        Some("ünïcode".as_bytes().to_vec()),
        "a Unicode key"
    );
    for (plugin, scope, want) in [
        ("p", "u1", &b"user one"[..]),
        ("p", "u10", b"user ten"),
        ("p2", "", b"another plugin"),
        ("p2", "u1", b"another plugin's user"),
    ] {
        assert_eq!(
            ok!(s.kv_get(plugin, scope, "bytes")),
            Some(want.to_vec()),
            "{plugin} in scope {scope:?}"
        );
    }
    assert_eq!(
        ok!(s.kv_get("p", "u2", "bytes")),
        None,
        "a scope with no data"
    );
    assert_eq!(
        ok!(s.kv_get("p3", "", "bytes")),
        None,
        "a plugin with no data"
    );
    assert_eq!(
        ok!(s.kv_get("p", "", "BYTES")),
        None,
        "keys compare exactly"
    );

    ok!(s.kv_set("p", "", "bytes", b"new", BIG_QUOTA));
    assert_eq!(
        ok!(s.kv_get("p", "", "bytes")),
        Some(b"new".to_vec()),
        "an overwritten value"
    );
    assert_eq!(
        ok!(s.kv_get("p", "u1", "bytes")),
        Some(b"user one".to_vec()),
        "another scope after the overwrite"
    );
    assert_eq!(
        ok!(s.kv_get("p2", "", "bytes")),
        Some(b"another plugin".to_vec()),
        "another plugin after the overwrite"
    );

    assert!(
        !ok!(s.kv_delete("p", "u2", "bytes")),
        "a delete in a scope without the key"
    );
    assert!(
        !ok!(s.kv_delete("p3", "", "bytes")),
        "a delete in a plugin without the key"
    );
    assert!(ok!(s.kv_delete("p", "", "bytes")), "a delete");
    assert!(!ok!(s.kv_delete("p", "", "bytes")), "a second delete");
    assert_eq!(ok!(s.kv_get("p", "", "bytes")), None, "the deleted key");
    assert_eq!(
        ok!(s.kv_get("p", "u1", "bytes")),
        Some(b"user one".to_vec()),
        "the same key in another scope after the delete"
    );
    assert_eq!(
        ok!(s.kv_get("p2", "", "bytes")),
        Some(b"another plugin".to_vec()),
        "the same key of another plugin after the delete"
    );
    assert_eq!(
        ok!(s.kv_list("p", "u1", "", 100)),
        ["bytes"],
        "keys of scope u1"
    );
    assert_eq!(
        ok!(s.kv_list("p", "", "", 100)),
        ["empty", "ключ/é"],
        "keys of the shared scope"
    );
}

/// Keys list in byte order, start with the prefix taken literally (no
/// wildcards, no regular expressions), and stop at the limit.
pub async fn kv_list_prefix_order_and_limit(s: &dyn Store) {
    let keys = [
        "b",
        "a",
        "a%",
        "a%b",
        "a_",
        "a_b",
        "a.b",
        "a*",
        "a+",
        "ab",
        "abc",
        "a\\",
        "a\\d",
        "aé",
        "a\u{10FFFF}",
        "a\u{10FFFF}z",
        "z",
        "é",
        "[x]",
        "(",
        "^a",
        "$a",
        "a|b",
        "a?",
        "a/b/c",
        "A",
    ];
    for key in keys {
        ok!(s.kv_set("p", "", key, key.as_bytes(), BIG_QUOTA));
    }
    ok!(s.kv_set("p", "u1", "a-user", b"x", BIG_QUOTA));
    ok!(s.kv_set("other", "", "a-other", b"x", BIG_QUOTA));

    let expected = |prefix: &str| -> Vec<String> {
        let mut matching: Vec<String> = keys
            .iter()
            .filter(|k| k.starts_with(prefix))
            .map(|k| k.to_string())
            .collect();
        matching.sort();
        matching
    };
    for prefix in [
        "",
        "a",
        "a%",
        "a_",
        "a.",
        "a*",
        "a+",
        "ab",
        "a\\",
        "aé",
        "a\u{10FFFF}",
        "é",
        "[",
        "(",
        "^",
        "$",
        "a|",
        "a?",
        "a/b/",
        "A",
        ".",
        "%",
        "_",
        "nothing",
        "abcd",
    ] {
        assert_eq!(
            ok!(s.kv_list("p", "", prefix, 100)),
            expected(prefix),
            "keys under {prefix:?}"
        );
    }
    assert_eq!(
        ok!(s.kv_list("p", "", "a", 3)),
        expected("a")[..3].to_vec(),
        "the first three keys under \"a\""
    );
    assert!(ok!(s.kv_list("p", "", "", 0)).is_empty(), "a limit of 0");
    assert_eq!(
        ok!(s.kv_list("p", "u1", "a", 100)),
        ["a-user"],
        "a user's scope"
    );
    assert!(
        ok!(s.kv_list("p", "u2", "", 100)).is_empty(),
        "a scope without data"
    );
    assert_eq!(
        ok!(s.kv_list("other", "", "", 100)),
        ["a-other"],
        "another plugin's keys"
    );
}

/// A plugin's usage is the bytes of its keys and values in all scopes; a
/// write that would take it past the quota stores nothing and fails with
/// `Conflict(KV_QUOTA)`; the value a write replaces counts as gone.
pub async fn kv_quota_counts_keys_and_values(s: &dyn Store) {
    let is_quota = |e: &StoreError| e.is_kv_quota();
    assert_eq!(ok!(s.kv_usage("p")), 0, "usage without data");
    ok!(s.kv_set("p", "", "k1", &[1; 48], 100));
    ok!(s.kv_set("p", "u1", "k2", &[2; 38], 100));
    assert_eq!(ok!(s.kv_usage("p")), 90, "usage over two scopes");

    let refused = s.kv_set("p", "u2", "k3", &[3; 9], 100).await;
    expect_err(
        refused,
        "a write one byte past the quota",
        "Conflict(KV_QUOTA)",
        is_quota,
    );
    assert_eq!(ok!(s.kv_get("p", "u2", "k3")), None, "the refused write");
    assert_eq!(ok!(s.kv_usage("p")), 90, "usage after the refused write");
    ok!(s.kv_set("p", "u2", "k3", &[3; 8], 100));
    assert_eq!(ok!(s.kv_usage("p")), 100, "usage at the quota");

    ok!(s.kv_set("p", "", "k1", &[4; 48], 100));
    assert_eq!(
        ok!(s.kv_get("p", "", "k1")),
        Some(vec![4; 48]),
        "a same-size replacement at the quota"
    );
    let refused = s.kv_set("p", "", "k1", &[5; 49], 100).await;
    expect_err(
        refused,
        "a replacement one byte larger",
        "Conflict(KV_QUOTA)",
        is_quota,
    );
    assert_eq!(
        ok!(s.kv_get("p", "", "k1")),
        Some(vec![4; 48]),
        "the value a refused write would have replaced"
    );
    ok!(s.kv_set("p", "", "k1", &[6; 10], 100));
    assert_eq!(
        ok!(s.kv_usage("p")),
        62,
        "usage after a smaller replacement"
    );
    assert!(ok!(s.kv_delete("p", "u1", "k2")));
    assert_eq!(ok!(s.kv_usage("p")), 22, "usage after a delete");

    // Plugins have quotas of their own.
    ok!(s.kv_set("other", "", "k", &[7; 99], 100));
    assert_eq!(ok!(s.kv_usage("other")), 100, "another plugin's usage");
    assert_eq!(ok!(s.kv_usage("p")), 22, "usage beside another plugin's");

    let refused = s.kv_set("p", "", "huge", &[8; 200], 100).await;
    expect_err(
        refused,
        "an entry larger than the quota",
        "Conflict(KV_QUOTA)",
        is_quota,
    );
    // A quota lowered below the usage refuses growth; deletes still work.
    let refused = s.kv_set("p", "", "k4", b"x", 20).await;
    expect_err(
        refused,
        "a write over a lowered quota",
        "Conflict(KV_QUOTA)",
        is_quota,
    );
    match s.kv_set("p", "", "k4", b"x", 20).await {
        Err(StoreError::Conflict(what)) => assert_eq!(what, KV_QUOTA, "what the conflict names"),
        other => panic!("a write over a lowered quota: {other:?}"),
    }
    assert!(ok!(s.kv_delete("p", "u2", "k3")));
    assert_eq!(ok!(s.kv_usage("p")), 12, "usage after deleting again");
    ok!(s.kv_set("p", "", "k4", b"x", 20));
    assert_eq!(ok!(s.kv_usage("p")), 15, "usage under the lowered quota");
}

/// Concurrent writes never take a plugin past its quota, and the usage
/// stays the bytes actually stored.
pub async fn kv_quota_holds_under_concurrent_writes(s: &dyn Store) {
    // Twenty entries of 100 bytes against room for ten.
    let keys: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
    let writes = keys.iter().map(|k| s.kv_set("p", "", k, &[9; 97], 1000));
    let results = futures::future::join_all(writes).await;
    let mut written = Vec::new();
    for (key, result) in keys.iter().zip(results) {
        match result {
            Ok(()) => written.push(key.clone()),
            Err(e) if e.is_kv_quota() => {}
            Err(e) => panic!("concurrent kv_set of {key}: {e:?}"),
        }
    }
    assert_eq!(written.len(), 10, "writes that fitted: {written:?}");
    assert_eq!(ok!(s.kv_list("p", "", "", 100)), written, "keys stored");
    assert_eq!(ok!(s.kv_usage("p")), 1000, "usage at the quota");
    for key in &written {
        assert!(ok!(s.kv_delete("p", "", key)));
    }
    assert_eq!(ok!(s.kv_usage("p")), 0, "usage after deleting them");

    // Writers racing on one key, with values of different sizes.
    let sizes: Vec<usize> = (10..18).collect();
    let values: Vec<Vec<u8>> = sizes.iter().map(|n| vec![*n as u8; *n]).collect();
    let writes = values.iter().map(|v| s.kv_set("p", "u1", "same", v, 1000));
    for result in futures::future::join_all(writes).await {
        if let Err(e) = result {
            panic!("concurrent kv_set of one key: {e:?}");
        }
    }
    let stored = ok!(s.kv_get("p", "u1", "same")).expect("the raced key");
    assert!(values.contains(&stored), "the stored value is one written");
    assert_eq!(
        ok!(s.kv_usage("p")),
        (4 + stored.len()) as u64,
        "usage after racing writes of one key"
    );
}
