//! A user's own chats: create, list and search, read, rename, pin, delete,
//! export, and append messages. Another user's chat is always 404.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{paging, search_term, usage, Paged};
use crate::chat::{load_chat, UNTITLED};
use crate::error::{ApiResult, AppError, Json, Path, Query, Validator};
use crate::model::{
    new_id, usage_kind, Chat, ChatQuery, Message, MessageRole, MessageStatus, SamplingOverrides,
};
use crate::policy::Caller;
use crate::state::AppState;
use crate::store::ChatUpdate;
use crate::time::now;
use corral_sdk::text::hides;

/// Longest temporary-chat lifetime: 30 days.
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

/// Filters for the chat list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListChatsParams {
    /// Part of a title or of any message (case-insensitive).
    #[param(max_length = 200)]
    pub q: Option<String>,
    pub pinned: Option<bool>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Matches to skip.
    #[param(maximum = 1_000_000_000)]
    pub offset: Option<u64>,
}

/// The caller's chats: pinned first, then most recently active.
#[utoipa::path(get, path = "/api/chats", tag = "chats",
    params(ListChatsParams),
    responses((status = 200, description = "A page of chats", body = Paged<Chat>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListChatsParams>,
) -> ApiResult<Json<Paged<Chat>>> {
    let (limit, offset) = paging(params.limit, params.offset)?;
    let query = ChatQuery {
        search: search_term(params.q)?,
        pinned: params.pinned,
        limit,
        offset,
    };
    let page = state.store.list_chats(caller.id(), &query, now()).await?;
    Ok(Json(Paged {
        items: page.items,
        total: page.total,
        limit,
        offset,
    }))
}

/// A new chat.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChatRequest {
    #[schema(
        example = "gemma-3-270m",
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub model: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub title: Option<String>,
    #[schema(example = "You are a concise assistant.", max_length = 20000)]
    pub system_prompt: Option<String>,
    /// A temporary chat is deleted when `ttl_seconds` have passed.
    #[serde(default)]
    pub temporary: bool,
    /// Lifetime of a temporary chat, 60 s to 30 days (default 24 h); only
    /// with `temporary`.
    #[schema(example = 3600, minimum = 60, maximum = 2592000)]
    pub ttl_seconds: Option<u64>,
    /// The chat's own sampling settings (default none: the model's).
    pub sampling: Option<SamplingOverrides>,
}

fn check_title(v: &mut Validator, title: &str) {
    v.check(
        (1..=200).contains(&title.chars().count()) && !hides(title),
        "title",
        "must be 1 to 200 characters, without control or invisible formatting characters",
    );
}

fn check_system_prompt(v: &mut Validator, prompt: &str) {
    v.check(
        prompt.chars().count() <= 20_000,
        "system_prompt",
        "must be at most 20000 characters",
    );
}

/// Sampling settings are checked as those sent with a message are: the
/// message names the setting, the error names `sampling`.
fn check_sampling(v: &mut Validator, sampling: &SamplingOverrides) {
    if let Err(message) = sampling.validate() {
        v.check(false, "sampling", message);
    }
}

/// Start a chat.
#[utoipa::path(post, path = "/api/chats", tag = "chats",
    request_body = CreateChatRequest,
    responses(
        (status = 201, description = "Created", body = Chat),
        (status = 409, description = "The account holds as many chats as it may (`limit_reached`)", body = corral_sdk::ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateChatRequest>,
) -> ApiResult<(StatusCode, Json<Chat>)> {
    let model = req.model.trim().to_owned();
    let title = req
        .title
        .as_deref()
        .map(str::trim)
        .unwrap_or(UNTITLED)
        .to_owned();
    let mut v = Validator::new();
    v.check(
        (1..=200).contains(&model.chars().count()) && !model.chars().any(char::is_control),
        "model",
        "must be 1 to 200 characters",
    );
    check_title(&mut v, &title);
    if let Some(prompt) = &req.system_prompt {
        check_system_prompt(&mut v, prompt);
    }
    if let Some(sampling) = &req.sampling {
        check_sampling(&mut v, sampling);
    }
    v.check(
        req.temporary || req.ttl_seconds.is_none(),
        "ttl_seconds",
        "only temporary chats expire",
    );
    v.check(
        req.ttl_seconds
            .is_none_or(|t| (60..=MAX_TTL_SECS).contains(&t)),
        "ttl_seconds",
        format!("must be 60 to {MAX_TTL_SECS}"),
    );
    v.finish()?;
    crate::limits::room_for_chat(&state, caller.id()).await?;
    let at = now();
    let expires_at = req
        .temporary
        .then(|| at + chrono::Duration::seconds(req.ttl_seconds.unwrap_or(24 * 3600) as i64));
    let chat = Chat {
        id: new_id(),
        owner_id: caller.id().to_owned(),
        title,
        model,
        system_prompt: req.system_prompt.filter(|p| !p.trim().is_empty()),
        pinned: false,
        temporary: req.temporary,
        created_at: at,
        updated_at: at,
        expires_at,
        sampling: req.sampling.unwrap_or_default(),
    };
    state.store.create_chat(&chat).await?;
    usage(&state, caller.id(), usage_kind::CHAT_CREATED).await;
    Ok((StatusCode::CREATED, Json(chat)))
}

/// A chat with its messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatWithMessages {
    #[serde(flatten)]
    pub chat: Chat,
    pub messages: Vec<Message>,
}

/// One of the caller's chats with its messages, oldest first.
#[utoipa::path(get, path = "/api/chats/{id}", tag = "chats",
    params(("id" = String, Path, description = "Chat id")),
    responses(
        (status = 200, description = "The chat", body = ChatWithMessages),
        (status = 404, description = "No such chat of the caller", body = corral_sdk::ErrorBody),
    ))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ChatWithMessages>> {
    let chat = load_chat(&state, &caller, &id).await?;
    let messages = state.store.list_messages(&chat.id).await?;
    Ok(Json(ChatWithMessages { chat, messages }))
}

/// Changes to a chat; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateChatRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub title: Option<String>,
    pub pinned: Option<bool>,
    #[schema(max_length = 20000)]
    pub system_prompt: Option<String>,
    /// Replaces the chat's sampling settings as a whole; `{}` clears them.
    pub sampling: Option<SamplingOverrides>,
}

/// Rename, pin or unpin a chat, or change its system prompt or sampling
/// settings.
#[utoipa::path(patch, path = "/api/chats/{id}", tag = "chats",
    params(("id" = String, Path, description = "Chat id")),
    request_body = UpdateChatRequest,
    responses(
        (status = 200, description = "Updated", body = Chat),
        (status = 404, description = "No such chat of the caller", body = corral_sdk::ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<UpdateChatRequest>,
) -> ApiResult<Json<Chat>> {
    let chat = load_chat(&state, &caller, &id).await?;
    let mut v = Validator::new();
    let mut changes = ChatUpdate {
        pinned: req.pinned,
        updated_at: Some(now()),
        ..Default::default()
    };
    if let Some(title) = &req.title {
        check_title(&mut v, title.trim());
        changes.title = Some(title.trim().to_owned());
    }
    if let Some(prompt) = req.system_prompt {
        check_system_prompt(&mut v, &prompt);
        changes.system_prompt = Some(Some(prompt).filter(|p| !p.trim().is_empty()));
    }
    if let Some(sampling) = req.sampling {
        check_sampling(&mut v, &sampling);
        changes.sampling = Some(sampling);
    }
    v.finish()?;
    let chat = state
        .store
        .update_chat(caller.id(), &chat.id, &changes)
        .await?;
    Ok(Json(chat))
}

/// Delete a chat and its messages.
#[utoipa::path(delete, path = "/api/chats/{id}", tag = "chats",
    params(("id" = String, Path, description = "Chat id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such chat of the caller", body = corral_sdk::ErrorBody),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if state.store.delete_chat(caller.id(), &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound("chat"))
    }
}

/// Export formats.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    #[default]
    Json,
    Markdown,
}

/// Export options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `json` (default) or `markdown`.
    pub format: Option<ExportFormat>,
}

/// Download a chat as JSON or Markdown.
#[utoipa::path(get, path = "/api/chats/{id}/export", tag = "chats",
    params(("id" = String, Path, description = "Chat id"), ExportParams),
    responses(
        (status = 200, description = "The chat as a file",
            content((ChatWithMessages = "application/json"), (String = "text/markdown"))),
        (status = 404, description = "No such chat of the caller", body = corral_sdk::ErrorBody),
    ))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<ExportParams>,
) -> ApiResult<Response> {
    let chat = load_chat(&state, &caller, &id).await?;
    let messages = state.store.list_messages(&chat.id).await?;
    let stem = file_stem(&chat.title);
    let body = ChatWithMessages { chat, messages };
    let (content_type, file, text) = match params.format.unwrap_or_default() {
        ExportFormat::Json => (
            "application/json",
            format!("{stem}.json"),
            serde_json::to_string_pretty(&body).map_err(anyhow::Error::from)?,
        ),
        ExportFormat::Markdown => (
            "text/markdown; charset=utf-8",
            format!("{stem}.md"),
            to_markdown(&body),
        ),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        text,
    )
        .into_response())
}

/// A file name made of the title's safe characters.
fn file_stem(title: &str) -> String {
    let stem: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    if stem.trim_matches('_').is_empty() {
        "chat".to_owned()
    } else {
        stem
    }
}

/// The chat as a Markdown document.
pub fn to_markdown(chat: &ChatWithMessages) -> String {
    let mut out = format!(
        "# {}\n\n- Model: `{}`\n- Created: {}\n",
        chat.chat.title,
        chat.chat.model,
        crate::time::format(&chat.chat.created_at)
    );
    if !chat.chat.sampling.is_empty() {
        let settings = serde_json::to_string(&chat.chat.sampling).unwrap_or_default();
        out.push_str(&format!("- Sampling: `{settings}`\n"));
    }
    if let Some(prompt) = &chat.chat.system_prompt {
        out.push_str(&format!("\n## System\n\n{prompt}\n"));
    }
    for m in &chat.messages {
        let who = match m.role {
            MessageRole::System => "System",
            MessageRole::User => "User",
            MessageRole::Assistant => "Assistant",
        };
        let note = match m.status {
            MessageStatus::Complete => String::new(),
            MessageStatus::Pending => " (in progress)".into(),
            MessageStatus::Cancelled => " (stopped)".into(),
            MessageStatus::Interrupted => " (interrupted)".into(),
            MessageStatus::Failed => format!(
                " (failed: {})",
                m.error.as_deref().unwrap_or("unknown error")
            ),
        };
        out.push_str(&format!(
            "\n## {who}{note}\n\n_{}_\n\n{}\n",
            crate::time::format(&m.created_at),
            m.content
        ));
    }
    out
}

/// A message from the user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessageRequest {
    #[schema(
        example = "Tell me a short story about a fox.",
        min_length = 1,
        max_length = 100000,
        pattern = r"\S"
    )]
    pub content: String,
}

/// Append a user message to a chat, without an answer. Refused while an
/// answer is being written in the chat, which would come after a question
/// it never saw.
#[utoipa::path(post, path = "/api/chats/{id}/messages", tag = "chats",
    params(("id" = String, Path, description = "Chat id")),
    request_body = NewMessageRequest,
    responses(
        (status = 201, description = "Stored", body = Message),
        (status = 404, description = "No such chat of the caller", body = corral_sdk::ErrorBody),
        (status = 409, description = "The chat holds `max_messages_per_chat` messages or 8 MiB of text (`limit_reached`), or an answer is being written in it (`conflict`)", body = corral_sdk::ErrorBody),
    ))]
pub async fn add_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<NewMessageRequest>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    let message = crate::chat::append(&state, &caller, &id, req.content).await?;
    Ok((StatusCode::CREATED, Json(message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(file_stem("Trip: Paris/Rome"), "Trip__Paris_Rome");
        assert_eq!(file_stem("///"), "chat");
    }
}
