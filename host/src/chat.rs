//! Answers in chats. Sending a message stores it, queues a generation over
//! the chat's stored history and streams [`ChatEvent`]s to whoever asked
//! (SSE or WebSocket). The answer's text is saved as it grows (about once a
//! second), and the answer is stored when it ends, with its usage, as
//! complete, cancelled or failed; one left `pending` by a process that died
//! is marked `interrupted` at the next start. One answer runs per chat at a
//! time; it stops when asked to or when its client goes away.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use corral_hooks::Surface;
use corral_sdk::backend::{ChatMessage, FinishReason, GenerateSummary, SamplingParams};
use corral_sdk::ErrorBody;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};
use utoipa::ToSchema;

use crate::error::{ApiResult, AppError, Validator};
use crate::generation::{self, Event, Finished};
use crate::inference::Prompt;
use crate::model::{
    generation_source, new_id, usage_kind, Chat, Generation, Message, MessageAnnotation,
    MessageRole, MessageStatus, MessageUsage,
};
use crate::policy::Caller;
use crate::registry;
use crate::state::AppState;
use crate::store::{ChatUpdate, MessageUpdate, Store, StoreError, StoreResult};
use crate::time::now;
use corral_sdk::text::without_hidden;

pub use corral_sdk::backend::CancelToken;

/// Longest accepted message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 100_000;
/// Title given to a chat until its first message names it.
pub const UNTITLED: &str = "New chat";

/// How often a growing answer's text is saved: what a crash can lose.
const SAVE_EVERY: Duration = Duration::from_secs(1);

pub use crate::model::SamplingOverrides;

impl SamplingOverrides {
    /// `defaults` with these changes, checked.
    pub fn apply(&self, defaults: &SamplingParams) -> Result<SamplingParams, AppError> {
        let s = self.over_params(defaults);
        s.validate().map_err(|m| AppError::field("sampling", m))?;
        Ok(s)
    }

    /// Checks the settings themselves, whatever they will lie over; the
    /// message names the first one out of range.
    pub fn validate(&self) -> Result<(), String> {
        // Each check looks at one setting, and the defaults pass them all.
        self.over_params(&SamplingParams::default()).validate()
    }

    fn over_params(&self, defaults: &SamplingParams) -> SamplingParams {
        let mut s = defaults.clone();
        if let Some(v) = self.temperature {
            s.temperature = v;
        }
        if let Some(v) = self.top_p {
            s.top_p = v;
        }
        if let Some(v) = self.top_k {
            s.top_k = v;
        }
        if let Some(v) = self.min_p {
            s.min_p = v;
        }
        if let Some(v) = self.repeat_penalty {
            s.repeat_penalty = v;
        }
        if let Some(v) = self.max_tokens {
            s.max_tokens = v;
        }
        if self.seed.is_some() {
            s.seed = self.seed;
        }
        if let Some(stop) = &self.stop {
            s.stop = stop.clone();
        }
        if let Some(v) = self.ignore_eos {
            s.ignore_eos = v;
        }
        s
    }
}

/// What an answer's client receives, in order: `user_message` (when a
/// message was sent), `assistant_message` (the pending answer), `queued`
/// while it waits, `started`, `delta`s, then exactly one of `done` or
/// `error`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    /// The message just sent, as stored.
    UserMessage { chat_id: String, message: Message },
    /// The answer being written, stored as `pending`.
    AssistantMessage { chat_id: String, message: Message },
    /// Generations ahead in the model's queue (1 is next).
    Queued { chat_id: String, position: usize },
    /// The model read the prompt.
    Started { chat_id: String, prompt_tokens: u32 },
    /// More text of the answer.
    Delta { chat_id: String, text: String },
    /// The answer as stored: `complete`, or `cancelled` when stopped, with
    /// its usage.
    Done { chat_id: String, message: Message },
    /// The answer failed (stored as `failed` when `message` is present),
    /// or a WebSocket frame was refused (no `chat_id` when the frame did
    /// not name one).
    Error {
        chat_id: Option<String>,
        error: ErrorBody,
        message: Option<Message>,
    },
}

/// What to answer.
#[derive(Debug, Clone)]
pub enum Action {
    /// Store this user message and answer it.
    Send(String),
    /// Answer the last user message again, replacing the answer after it.
    Regenerate,
}

/// The answers running now, by chat, and the chat WebSockets open, by
/// account.
#[derive(Default)]
pub struct ChatRuns {
    active: Mutex<HashMap<String, RunHandle>>,
    sockets: Mutex<HashMap<String, usize>>,
    /// Set when the server shuts down: no new answer starts.
    closed: AtomicBool,
}

#[derive(Clone)]
struct RunHandle {
    /// Stops a generation that has started.
    cancel: CancelToken,
    /// Wakes an answer still waiting in the queue.
    stop: Arc<Notify>,
}

impl RunHandle {
    fn stop(&self) {
        self.cancel.cancel();
        self.stop.notify_one();
    }
}

impl ChatRuns {
    /// Marks `chat_id` busy; the guard frees it.
    fn claim(self: &Arc<Self>, chat_id: &str) -> ApiResult<(RunGuard, RunHandle)> {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(Ordering::SeqCst) {
            return Err(AppError::Unavailable(
                "the server is shutting down; try again in a moment".into(),
            ));
        }
        if active.contains_key(chat_id) {
            return Err(AppError::Conflict(
                "an answer is being written in this chat: stop it first".into(),
            ));
        }
        let handle = RunHandle {
            cancel: CancelToken::new(),
            stop: Arc::new(Notify::new()),
        };
        active.insert(chat_id.to_owned(), handle.clone());
        Ok((
            RunGuard {
                runs: self.clone(),
                chat_id: chat_id.to_owned(),
            },
            handle,
        ))
    }

    /// Stops the chat's running answer; false if none runs.
    pub fn stop(&self, chat_id: &str) -> bool {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        match active.get(chat_id) {
            Some(handle) => {
                handle.stop();
                true
            }
            None => false,
        }
    }

    /// Refuses new answers from now on.
    pub fn close(&self) {
        let _active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Stops every running answer; each is stored as `cancelled` with its
    /// text.
    pub fn stop_all(&self) {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        for handle in active.values() {
            handle.stop();
        }
    }

    /// Waits until no answer runs, or `deadline`; true if none runs.
    pub async fn wait_idle(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            if self.running() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Answers running now.
    pub fn running(&self) -> usize {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Counts a WebSocket of `user_id` as open until the slot is dropped;
    /// refuses it when the account has `cap` open already, or all accounts
    /// together `total` (a socket holds a connection for as long as it is
    /// open: the rest stay for everything else).
    pub fn open_socket(
        self: &Arc<Self>,
        user_id: &str,
        cap: usize,
        total: usize,
    ) -> ApiResult<SocketSlot> {
        let mut sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        if sockets.values().sum::<usize>() >= total {
            return Err(AppError::Unavailable(format!(
                "the server has {total} chat WebSockets open, as many as it takes; use the \
                 event stream of `/api/chats/{{id}}/stream`, or try again later"
            )));
        }
        let open = sockets.entry(user_id.to_owned()).or_default();
        if *open >= cap {
            return Err(AppError::LimitReached(format!(
                "an account may have at most {cap} chat WebSockets open; close one first"
            )));
        }
        *open += 1;
        Ok(SocketSlot {
            runs: self.clone(),
            user_id: user_id.to_owned(),
        })
    }
}

/// One open chat WebSocket of an account.
pub struct SocketSlot {
    runs: Arc<ChatRuns>,
    user_id: String,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut sockets = self
            .runs
            .sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = sockets.get_mut(&self.user_id) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                sockets.remove(&self.user_id);
            }
        }
    }
}

struct RunGuard {
    runs: Arc<ChatRuns>,
    chat_id: String,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.runs
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.chat_id);
    }
}

/// Starts an answer in one of the caller's chats and returns its events.
/// Errors that come before anything is stored (no such chat or model, a
/// full queue, a spent quota, an answer already running) are returned
/// here; later ones arrive as an `error` event.
pub async fn start(
    state: &AppState,
    caller: &Caller,
    chat_id: &str,
    action: Action,
    overrides: &SamplingOverrides,
) -> ApiResult<mpsc::UnboundedReceiver<ChatEvent>> {
    if let Action::Send(content) = &action {
        check_content(content)?;
    }
    let mut chat = load_chat(state, caller, chat_id).await?;
    // A chat whose model is gone says so before anything else.
    let record = registry::find_usable(state, &caller.user, &chat.model).await?;
    let (guard, handle) = state.chat_runs.claim(&chat.id)?;
    let regenerate = matches!(action, Action::Regenerate);

    let stored = state.store.list_messages(&chat.id).await?;
    let (history, replaced) = match &action {
        Action::Send(_) => (stored.as_slice(), None),
        Action::Regenerate => match stored.last() {
            Some(last) if last.role == MessageRole::Assistant => {
                (&stored[..stored.len() - 1], Some(last.clone()))
            }
            Some(_) => (stored.as_slice(), None),
            None => {
                return Err(AppError::Conflict(
                    "the chat has no message to answer".into(),
                ))
            }
        },
    };
    // A question and its answer, an answer to the last question, or one
    // answer in place of another.
    let adding = match (&action, &replaced) {
        (Action::Send(_), _) => 2,
        (Action::Regenerate, None) => 1,
        (Action::Regenerate, Some(_)) => 0,
    };
    crate::limits::room_for_messages(state, stored.len(), adding)?;
    if let Action::Send(content) = &action {
        crate::limits::room_in_chat(text_bytes(&stored), content.len())?;
    }
    let mut prompt = Vec::with_capacity(history.len() + 2);
    if let Some(system) = chat.system_prompt.as_ref().filter(|s| !s.trim().is_empty()) {
        prompt.push(ChatMessage {
            role: "system".into(),
            content: system.clone(),
        });
    }
    prompt.extend(history.iter().filter_map(turn));
    if let Action::Send(content) = &action {
        prompt.push(ChatMessage {
            role: "user".into(),
            content: content.clone(),
        });
    }
    if prompt.last().is_none_or(|m| m.role != "user") {
        return Err(AppError::Conflict(
            "the chat has no message to answer".into(),
        ));
    }

    // The answer's id and time are settled first: they name the run its
    // generation is recorded under.
    let at = now();
    let (answer_id, answer_at) = match &replaced {
        // Strictly later than the run it replaces, so the runs' names differ.
        Some(old) => (
            old.id.clone(),
            at.max(old.created_at + chrono::TimeDelta::milliseconds(1)),
        ),
        // After the user message, also within the same millisecond.
        None => (new_id(), at + chrono::TimeDelta::milliseconds(1)),
    };
    let request = generation::Request {
        model: chat.model.clone(),
        surface: Surface::Chat,
        prompt: Prompt::History(prompt),
        // The chat's settings, then the message's, over the model's.
        sampling: overrides.over(&chat.sampling),
        chat_id: Some(chat.id.clone()),
        hooks: true,
        record_as: Some(run_id(&answer_id, &answer_at)),
    };
    let running =
        generation::start_on(state, &caller.user, record, request, handle.cancel.clone()).await?;
    let record = running.model;
    let events = running.events;

    let (out, rx) = mpsc::unbounded_channel();
    if let Action::Send(content) = action {
        let message = store_user_message(state, caller, &mut chat, content, at).await?;
        let _ = out.send(ChatEvent::UserMessage {
            chat_id: chat.id.clone(),
            message,
        });
    }
    if regenerate {
        // Before the answer is reset: if this fails, the old answer stands
        // rather than one left `pending` with nothing writing it.
        let touch = ChatUpdate {
            updated_at: Some(at),
            ..Default::default()
        };
        chat = state
            .store
            .update_chat(caller.id(), &chat.id, &touch)
            .await?;
    }
    let answer = match replaced {
        Some(old) => {
            let answer = Message {
                content: String::new(),
                status: MessageStatus::Pending,
                error: None,
                model: Some(record.name.clone()),
                usage: None,
                annotations: Vec::new(),
                created_at: answer_at,
                ..old
            };
            let restart = MessageUpdate {
                content: Some(String::new()),
                status: Some(MessageStatus::Pending),
                error: Some(None),
                model: Some(answer.model.clone()),
                usage: Some(None),
                annotations: Some(Vec::new()),
                created_at: Some(answer_at),
            };
            state.store.update_message(&answer.id, &restart).await?;
            answer
        }
        None => {
            let answer = Message {
                id: answer_id,
                chat_id: chat.id.clone(),
                role: MessageRole::Assistant,
                content: String::new(),
                status: MessageStatus::Pending,
                error: None,
                model: Some(record.name.clone()),
                usage: None,
                annotations: Vec::new(),
                created_at: answer_at,
            };
            state.store.add_message(&answer).await?;
            answer
        }
    };
    let _ = out.send(ChatEvent::AssistantMessage {
        chat_id: chat.id.clone(),
        message: answer.clone(),
    });

    let run = Run {
        _guard: guard,
        state: state.clone(),
        chat,
        answer,
        handle,
        out,
        rerouted: false,
    };
    tokio::spawn(run.drive(events));
    Ok(rx)
}

/// One of the caller's chats; another user's is "not found".
pub async fn load_chat(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Chat> {
    state
        .store
        .get_chat(caller.id(), id, now())
        .await?
        .ok_or(AppError::NotFound("chat"))
}

/// The id an answer's generation is recorded under: the answer and the
/// time this version of it was started, which a regenerated answer moves on.
pub fn run_id(answer_id: &str, created_at: &DateTime<Utc>) -> String {
    format!("{answer_id}@{}", created_at.timestamp_millis())
}

/// Refuses a message that is blank or longer than [`MAX_MESSAGE_CHARS`].
fn check_content(content: &str) -> ApiResult<()> {
    Validator::new()
        .check(
            !content.trim().is_empty() && content.chars().count() <= MAX_MESSAGE_CHARS,
            "content",
            format!("must be 1 to {MAX_MESSAGE_CHARS} characters"),
        )
        .finish()
}

/// Bytes of text `messages` hold.
fn text_bytes(messages: &[Message]) -> usize {
    messages.iter().map(|m| m.content.len()).sum()
}

/// Appends a message of the caller to one of their chats without an
/// answer. Refused while an answer is being written there (it would be
/// stored after a question it never saw), and past the chat's caps.
pub async fn append(
    state: &AppState,
    caller: &Caller,
    chat_id: &str,
    content: String,
) -> ApiResult<Message> {
    check_content(&content)?;
    let mut chat = load_chat(state, caller, chat_id).await?;
    let (_guard, _handle) = state.chat_runs.claim(&chat.id)?;
    let stored = state.store.list_messages(&chat.id).await?;
    crate::limits::room_for_messages(state, stored.len(), 1)?;
    crate::limits::room_in_chat(text_bytes(&stored), content.len())?;
    store_user_message(state, caller, &mut chat, content, now()).await
}

/// Stores a message of the caller written `at` in `chat`, names an untitled
/// chat after it, marks the chat active and counts the message; `chat`
/// becomes the chat as stored.
pub async fn store_user_message(
    state: &AppState,
    caller: &Caller,
    chat: &mut Chat,
    content: String,
    at: DateTime<Utc>,
) -> ApiResult<Message> {
    let message = Message {
        id: new_id(),
        chat_id: chat.id.clone(),
        role: MessageRole::User,
        content,
        status: MessageStatus::Complete,
        error: None,
        model: None,
        usage: None,
        annotations: Vec::new(),
        created_at: at,
    };
    state.store.add_message(&message).await?;
    let changes = ChatUpdate {
        title_if: Some((UNTITLED.to_owned(), title_from(&message.content))),
        updated_at: Some(message.created_at),
        ..Default::default()
    };
    *chat = state
        .store
        .update_chat(&chat.owner_id, &chat.id, &changes)
        .await?;
    crate::usage::record(
        state.store.as_ref(),
        caller.id(),
        usage_kind::MESSAGE_CREATED,
    )
    .await;
    Ok(message)
}

/// A title from the first line of a message, at most 60 characters.
pub fn title_from(content: &str) -> String {
    let line = content.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let clean = without_hidden(line.trim());
    let mut title: String = clean.chars().take(60).collect();
    if clean.chars().count() > 60 {
        title.push('…');
    }
    if title.is_empty() {
        UNTITLED.to_owned()
    } else {
        title
    }
}

/// A stored message as a turn of the prompt; failed answers and empty
/// ones are left out (an interrupted answer counts as a stopped one).
fn turn(m: &Message) -> Option<ChatMessage> {
    let role = match (m.role, m.status) {
        (MessageRole::System, _) => "system",
        (MessageRole::User, _) => "user",
        (
            MessageRole::Assistant,
            MessageStatus::Complete | MessageStatus::Cancelled | MessageStatus::Interrupted,
        ) => "assistant",
        (MessageRole::Assistant, _) => return None,
    };
    (!m.content.is_empty()).then(|| ChatMessage {
        role: role.into(),
        content: m.content.clone(),
    })
}

/// How an answer ended.
enum Outcome {
    Finished(Box<Finished>),
    Failed(AppError),
    /// Stopped (or its client left) before the model started on it.
    StoppedEarly,
}

struct Run {
    /// Frees the chat; held only to be dropped. Declared before `out`, so
    /// it is dropped first: a client that saw its stream end may append to
    /// the chat at once.
    _guard: RunGuard,
    state: AppState,
    chat: Chat,
    answer: Message,
    handle: RunHandle,
    out: mpsc::UnboundedSender<ChatEvent>,
    /// A fallback model answers (`answer.model` names it).
    rerouted: bool,
}

impl Run {
    fn send(&self, event: ChatEvent) -> bool {
        self.out.send(event).is_ok()
    }

    async fn drive(mut self, mut events: mpsc::UnboundedReceiver<generation::Event>) {
        let chat_id = self.chat.id.clone();
        let mut started = false;
        let mut client_gone = false;
        let mut text = String::new();
        let mut progress = Progress::default();
        let mut save =
            tokio::time::interval_at(tokio::time::Instant::now() + SAVE_EVERY, SAVE_EVERY);
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut saved_len = 0;
        let outcome = loop {
            let delivered = tokio::select! {
                // Events first: a `Started` already sent is seen before a
                // stop or a client that left, so what ran is counted.
                biased;
                event = events.recv() => match event {
                    Some(Event::Queued { position }) => self.send(ChatEvent::Queued {
                        chat_id: chat_id.clone(),
                        position,
                    }),
                    Some(Event::Rerouted { model, .. }) => {
                        // The answer is the fallback's: it says so.
                        self.answer.model = Some(model);
                        self.rerouted = true;
                        true
                    }
                    Some(Event::Started { prompt_tokens }) => {
                        started = true;
                        progress.started(prompt_tokens);
                        self.send(ChatEvent::Started {
                            chat_id: chat_id.clone(),
                            prompt_tokens,
                        })
                    }
                    Some(Event::Text { text: delta, tokens }) => {
                        text.push_str(&delta);
                        progress.pieces(tokens);
                        self.send(ChatEvent::Delta {
                            chat_id: chat_id.clone(),
                            text: delta,
                        })
                    }
                    Some(Event::Done(finished)) => break Outcome::Finished(finished),
                    Some(Event::Failed { error }) => break Outcome::Failed(error),
                    None => break Outcome::Failed(AppError::Internal(anyhow::anyhow!(
                        "the generation ended without a result"
                    ))),
                },
                () = self.handle.stop.notified(), if !started => break Outcome::StoppedEarly,
                () = self.out.closed(), if !client_gone => false,
                _ = save.tick() => {
                    if text.len() != saved_len {
                        self.save_progress(&text, &progress).await;
                        saved_len = text.len();
                    }
                    true
                }
            };
            if !delivered && !client_gone {
                // Nobody is listening any more: stop, and store what came.
                client_gone = true;
                self.handle.cancel.cancel();
                if !started {
                    break Outcome::StoppedEarly;
                }
            }
        };
        drop(events);
        self.finish(outcome, text, &progress).await;
    }

    /// Saves the text so far, so that a crash loses at most the last
    /// second of it.
    async fn save_progress(&self, text: &str, progress: &Progress) {
        let usage = progress.usage();
        match self
            .state
            .store
            .save_answer_progress(&self.answer.id, text, &usage)
            .await
        {
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(%err, chat = %self.chat.id, "could not save an answer's text")
            }
        }
    }

    async fn finish(&mut self, outcome: Outcome, text: String, progress: &Progress) {
        let mut answer = self.answer.clone();
        answer.content = text;
        let mut error = None;
        match outcome {
            Outcome::Finished(finished) => {
                let summary = &finished.summary;
                answer.status = if summary.finish_reason == FinishReason::Cancelled {
                    MessageStatus::Cancelled
                } else {
                    MessageStatus::Complete
                };
                answer.usage = Some(usage_of(summary));
                if let Some(replacement) = finished.replacement {
                    answer.content = replacement;
                }
                answer.annotations = finished
                    .annotations
                    .into_iter()
                    .map(|a| MessageAnnotation {
                        plugin: a.plugin,
                        text: a.text,
                    })
                    .collect();
            }
            Outcome::Failed(err) => {
                // A crashed worker, or an upstream or node that broke off,
                // cut the answer off; what was said stands.
                let cut_off = match &err {
                    AppError::ModelWorker { code, .. } => {
                        *code == "worker_crashed"
                            || ([
                                crate::inference::upstream::UNAVAILABLE,
                                crate::inference::nodes::UNREACHABLE,
                            ]
                            .contains(code)
                                && !answer.content.is_empty())
                    }
                    _ => false,
                };
                answer.status = if cut_off {
                    MessageStatus::Interrupted
                } else {
                    MessageStatus::Failed
                };
                // What it read and wrote before it failed, as counted.
                if progress.started.is_some() {
                    answer.usage = Some(progress.usage());
                }
                answer.error = Some(err.body().message.clone());
                error = Some(err.body());
            }
            // Nothing ran.
            Outcome::StoppedEarly => answer.status = MessageStatus::Cancelled,
        }

        let state = &self.state;
        let end = MessageUpdate {
            content: Some(answer.content.clone()),
            status: Some(answer.status),
            error: Some(answer.error.clone()),
            model: self.rerouted.then(|| answer.model.clone()),
            usage: Some(answer.usage.clone()),
            annotations: Some(answer.annotations.clone()),
            created_at: None,
        };
        // The chat is touched first: the answer's final status is the last
        // write before the chat is free again, so a client that sees the
        // answer settled can send the next message at once.
        let touch = ChatUpdate {
            updated_at: Some(now()),
            ..Default::default()
        };
        if let Err(err) = state
            .store
            .update_chat(&self.chat.owner_id, &self.chat.id, &touch)
            .await
        {
            // A chat deleted while it was answered ends up here.
            tracing::debug!(%err, chat = %self.chat.id, "could not touch the chat");
        }
        if let Err(err) = state.store.update_message(&answer.id, &end).await {
            tracing::error!(%err, chat = %self.chat.id, "could not store an answer");
        }
        let chat_id = self.chat.id.clone();
        self.send(match error {
            Some(error) => ChatEvent::Error {
                chat_id: Some(chat_id),
                error,
                message: Some(answer),
            },
            None => ChatEvent::Done {
                chat_id,
                message: answer,
            },
        });
    }
}

/// What an answer has produced so far, for the saves while it grows.
#[derive(Default)]
struct Progress {
    started: Option<Instant>,
    prompt_tokens: u32,
    /// Text pieces received: the backends send one per token.
    pieces: u32,
    first_piece: Option<Instant>,
}

impl Progress {
    fn started(&mut self, prompt_tokens: u32) {
        self.started = Some(Instant::now());
        self.prompt_tokens = prompt_tokens;
    }

    /// Text covering `tokens` generated tokens arrived.
    fn pieces(&mut self, tokens: u32) {
        self.pieces = self.pieces.saturating_add(tokens);
        if self.first_piece.is_none() {
            self.first_piece = Some(Instant::now());
        }
    }

    fn usage(&self) -> MessageUsage {
        let start = self.started.unwrap_or_else(Instant::now);
        let first = self.first_piece.unwrap_or(start);
        let decode = first.elapsed().as_secs_f64();
        let tokens_per_second = if self.pieces > 1 && decode > 0.0 {
            f64::from(self.pieces - 1) / decode
        } else {
            0.0
        };
        MessageUsage {
            prompt_tokens: self.prompt_tokens,
            // Only the final summary says how much came from the cache.
            cached_tokens: 0,
            completion_tokens: self.pieces,
            time_to_first_token_ms: u64::try_from(first.duration_since(start).as_millis())
                .unwrap_or(u64::MAX),
            tokens_per_second: (tokens_per_second * 100.0).round() / 100.0,
        }
    }
}

/// Marks the answers a previous process left `pending` (it died while
/// writing them) as `interrupted`, keeping the text saved so far, and counts
/// what they generated. Run once at start, before the server listens. With a
/// MongoDB store shared by several hosts this would also cut off answers
/// another live host is writing; Corral runs one host per store.
pub async fn recover_interrupted(store: &dyn Store) -> StoreResult<usize> {
    let answers = store.interrupt_pending_answers().await?;
    let mut unrecorded = None;
    for (answer, owner_id) in &answers {
        let usage = answer.usage.clone().unwrap_or(MessageUsage {
            prompt_tokens: 0,
            cached_tokens: 0,
            completion_tokens: 0,
            time_to_first_token_ms: 0,
            tokens_per_second: 0.0,
        });
        let decode_ms = if usage.completion_tokens > 1 && usage.tokens_per_second > 0.0 {
            (f64::from(usage.completion_tokens - 1) / usage.tokens_per_second * 1000.0).round()
                as u64
        } else {
            0
        };
        let generation = Generation {
            id: run_id(&answer.id, &answer.created_at),
            user_id: owner_id.clone(),
            model: answer.model.clone().unwrap_or_default(),
            source: generation_source::CHAT.to_owned(),
            prompt_tokens: usage.prompt_tokens,
            cached_tokens: usage.cached_tokens,
            completion_tokens: usage.completion_tokens,
            time_to_first_token_ms: (usage.completion_tokens > 0)
                .then_some(usage.time_to_first_token_ms),
            duration_ms: usage.time_to_first_token_ms + decode_ms,
            status: MessageStatus::Interrupted,
            at: now(),
        };
        // These answers are no longer `pending`: a record not written now is
        // never written, so one failure does not stop the others, and each
        // is tried again once.
        let mut result = store.record_generation(&generation).await;
        if matches!(result, Err(StoreError::Unavailable(_))) {
            result = store.record_generation(&generation).await;
        }
        match result {
            Ok(()) => {}
            // The run was counted when it ended; the process died before
            // it stored the answer's end.
            Err(StoreError::Conflict(_)) => {
                tracing::info!(answer = %answer.id, "an interrupted answer was already counted");
            }
            Err(err) => {
                tracing::error!(%err, answer = %answer.id, "could not count an interrupted answer");
                unrecorded.get_or_insert(err);
            }
        }
    }
    match unrecorded {
        Some(err) => Err(err),
        None => Ok(answers.len()),
    }
}

fn seconds_to_ms(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1000.0).round() as u64
}

/// Usage of a finished generation; tokens per second count the decoding
/// after the first token (all of the time when there was only one).
fn usage_of(summary: &GenerateSummary) -> MessageUsage {
    let decode = summary.total_time - summary.time_to_first_token;
    let tokens_per_second = if summary.completion_tokens > 1 && decode > 0.0 {
        f64::from(summary.completion_tokens - 1) / decode
    } else if summary.total_time > 0.0 {
        f64::from(summary.completion_tokens) / summary.total_time
    } else {
        0.0
    };
    MessageUsage {
        prompt_tokens: summary.prompt_tokens,
        cached_tokens: summary.cached_tokens.min(summary.prompt_tokens),
        completion_tokens: summary.completion_tokens,
        time_to_first_token_ms: seconds_to_ms(summary.time_to_first_token),
        tokens_per_second: (tokens_per_second * 100.0).round() / 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_come_from_the_first_line() {
        assert_eq!(title_from("\n  Hello there\nsecond"), "Hello there");
        let long = "x".repeat(80);
        assert_eq!(title_from(&long).chars().count(), 61);
        assert_eq!(title_from("   "), UNTITLED);
    }

    #[test]
    fn an_account_holds_at_most_its_websockets() {
        let runs = Arc::new(ChatRuns::default());
        let mut held: Vec<_> = (0..2)
            .map(|_| runs.open_socket("ada", 2, 4).expect("room"))
            .collect();
        let err = runs.open_socket("ada", 2, 4).err().expect("full");
        assert_eq!((err.status().as_u16(), err.code()), (409, "limit_reached"));
        let bob = runs
            .open_socket("bob", 2, 4)
            .expect("another account has room");
        held.pop();
        held.push(
            runs.open_socket("ada", 2, 4)
                .expect("a closed one gave its place back"),
        );
        // All accounts together hold at most `total`.
        let cy = runs.open_socket("cy", 2, 4).expect("the fourth");
        let err = runs.open_socket("dee", 2, 4).err().expect("all taken");
        assert_eq!((err.status().as_u16(), err.code()), (503, "unavailable"));
        drop((held, bob, cy));
        assert!(runs.sockets.lock().unwrap().is_empty());
        runs.open_socket("dee", 2, 4).expect("room again");
    }

    fn message(role: MessageRole, status: MessageStatus, content: &str) -> Message {
        Message {
            id: new_id(),
            chat_id: "c".into(),
            role,
            content: content.into(),
            status,
            error: None,
            model: None,
            usage: None,
            annotations: Vec::new(),
            created_at: now(),
        }
    }

    #[test]
    fn failed_and_empty_answers_are_not_history() {
        use MessageRole::*;
        use MessageStatus::*;
        assert!(turn(&message(Assistant, Failed, "half")).is_none());
        assert!(turn(&message(Assistant, Pending, "")).is_none());
        assert!(turn(&message(Assistant, Cancelled, "")).is_none());
        assert_eq!(
            turn(&message(Assistant, Cancelled, "part")).map(|t| t.role),
            Some("assistant".into())
        );
        assert_eq!(
            turn(&message(Assistant, Interrupted, "cut off")).map(|t| t.role),
            Some("assistant".into())
        );
        assert!(turn(&message(Assistant, Interrupted, "")).is_none());
        assert_eq!(
            turn(&message(User, Complete, "hi")).map(|t| t.content),
            Some("hi".into())
        );
    }

    #[test]
    fn overrides_change_only_what_they_name() {
        let defaults = SamplingParams::default();
        let s = SamplingOverrides {
            temperature: Some(0.0),
            max_tokens: Some(7),
            ..Default::default()
        }
        .apply(&defaults)
        .unwrap();
        assert_eq!((s.temperature, s.max_tokens), (0.0, 7));
        assert_eq!(s.top_k, defaults.top_k);
        let bad = SamplingOverrides {
            top_p: Some(2.0),
            ..Default::default()
        };
        assert!(bad.apply(&defaults).is_err());
    }

    #[test]
    fn a_message_overrides_its_chat_which_overrides_the_model() {
        let model = SamplingParams {
            temperature: 0.2,
            top_k: 10,
            max_tokens: 100,
            stop: vec!["A".into()],
            ..SamplingParams::default()
        };
        let chat = SamplingOverrides {
            temperature: Some(0.9),
            max_tokens: Some(3),
            stop: Some(vec!["B".into()]),
            ..Default::default()
        };
        let message = SamplingOverrides {
            max_tokens: Some(5),
            stop: Some(Vec::new()),
            ..Default::default()
        };
        let s = message.over(&chat).apply(&model).unwrap();
        assert_eq!((s.temperature, s.top_k, s.max_tokens), (0.9, 10, 5));
        assert!(s.stop.is_empty(), "an empty list clears the chat's stops");
        let s = SamplingOverrides::default()
            .over(&chat)
            .apply(&model)
            .unwrap();
        assert_eq!((s.max_tokens, s.stop), (3, vec!["B".to_string()]));
        assert_eq!(
            SamplingOverrides {
                min_p: Some(1.5),
                ..Default::default()
            }
            .validate(),
            Err("`min_p` must be between 0 and 1".to_string())
        );
        assert!(chat.validate().is_ok());
    }

    #[test]
    fn decode_speed_leaves_out_the_first_token() {
        let summary = GenerateSummary {
            finish_reason: FinishReason::Length,
            prompt_tokens: 10,
            completion_tokens: 11,
            truncated_tokens: 0,
            time_to_first_token: 0.5,
            total_time: 1.5,
            cached_tokens: 7,
        };
        let usage = usage_of(&summary);
        assert_eq!(usage.cached_tokens, 7);
        assert_eq!(usage.time_to_first_token_ms, 500);
        assert_eq!(usage.tokens_per_second, 10.0);
    }

    #[test]
    fn a_chat_runs_one_answer_at_a_time() {
        let runs = Arc::new(ChatRuns::default());
        let (guard, _) = runs.claim("c1").unwrap();
        assert!(runs.claim("c1").is_err());
        assert!(runs.claim("c2").is_ok());
        assert!(runs.stop("c1"));
        drop(guard);
        assert!(!runs.stop("c1"));
        assert!(runs.claim("c1").is_ok());
    }
}
