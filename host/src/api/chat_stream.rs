//! Answers in chats, streamed: over SSE (one request per answer) or over a
//! WebSocket that carries any number of the caller's chats. Both send the
//! same [`ChatEvent`] objects.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{
    close_code, CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade,
};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, StreamExt};
use futures::SinkExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use utoipa::ToSchema;

use crate::api::event_stream;
use crate::chat::load_chat;
use crate::chat::{self, Action, ChatEvent, SamplingOverrides, SocketSlot};
use crate::error::{ApiResult, AppError, Json, OptionalJson, Path};
use crate::policy::{self, ends_access, until, Caller, Credential, RECHECK_EVERY};
use crate::state::AppState;

/// A message to send and answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Not blank.
    #[schema(
        example = "What is the capital of France?",
        min_length = 1,
        max_length = 100000,
        pattern = r"\S"
    )]
    pub content: String,
    /// Sampling for this answer only, over the chat's own settings and
    /// the model's defaults.
    pub sampling: Option<SamplingOverrides>,
}

/// Options of a regenerated answer.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegenerateRequest {
    pub sampling: Option<SamplingOverrides>,
}

fn sse(state: &AppState, events: mpsc::UnboundedReceiver<ChatEvent>) -> Response {
    // Not cut at shutdown: the answer finishes or is stopped within the
    // grace period, and the stream ends after its `done`.
    let open = state.shutdown.hold();
    let stream = stream::unfold((events, open), |(mut events, open)| async move {
        let event = events.recv().await?;
        Some((to_sse(event), (events, open)))
    });
    event_stream(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn to_sse(event: ChatEvent) -> Result<Event, Infallible> {
    let name = match &event {
        ChatEvent::UserMessage { .. } => "user_message",
        ChatEvent::AssistantMessage { .. } => "assistant_message",
        ChatEvent::Queued { .. } => "queued",
        ChatEvent::Started { .. } => "started",
        ChatEvent::Delta { .. } => "delta",
        ChatEvent::Done { .. } => "done",
        ChatEvent::Error { .. } => "error",
    };
    let data = serde_json::to_string(&event).unwrap_or_else(|_| "{}".to_owned());
    Ok(Event::default().event(name).data(data))
}

/// Send a message and stream the answer as server-sent events.
///
/// Each event is named after its `type` and carries a `ChatEvent` as JSON:
/// `user_message`, `assistant_message`, `queued` (while waiting), `started`,
/// `delta`s, then `done` or `error`. Closing the connection stops the
/// answer; what was written so far is stored as `cancelled`.
#[utoipa::path(post, path = "/api/chats/{id}/stream", tag = "chats",
    params(("id" = String, Path, description = "Chat id")),
    request_body = SendRequest,
    responses(
        (status = 200, description = "A stream of `ChatEvent`s (each in an event's data)", content_type = "text/event-stream", body = crate::openapi::SseEvent),
        (status = 404, description = "No such chat of the caller, or its model is gone", body = corral_sdk::ErrorBody),
        (status = 409, description = "An answer is already being written in this chat (`conflict`), or the chat holds `max_messages_per_chat` messages or 8 MiB of text (`limit_reached`)", body = corral_sdk::ErrorBody),
        (status = 429, description = "The model's queue, the caller's concurrent answers or the daily token allowance is full", body = corral_sdk::ErrorBody),
        (status = 503, description = "The model is not downloaded or its backend is missing", body = corral_sdk::ErrorBody),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<SendRequest>,
) -> ApiResult<Response> {
    let sampling = req.sampling.unwrap_or_default();
    let events = chat::start(&state, &caller, &id, Action::Send(req.content), &sampling).await?;
    Ok(sse(&state, events))
}

/// Write the last answer again (or answer the last message if it has no
/// answer), streamed like `/stream` but without `user_message`. The body
/// may be left out.
#[utoipa::path(post, path = "/api/chats/{id}/regenerate", tag = "chats",
    params(("id" = String, Path, description = "Chat id")),
    request_body(content = Option<RegenerateRequest>, description = "Optional"),
    responses(
        (status = 200, description = "A stream of `ChatEvent`s (each in an event's data)", content_type = "text/event-stream", body = crate::openapi::SseEvent),
        (status = 404, description = "No such chat of the caller, or its model is gone", body = corral_sdk::ErrorBody),
        (status = 409, description = "An answer is being written, or there is nothing to answer (`conflict`), or the chat holds `max_messages_per_chat` messages or 8 MiB of text (`limit_reached`)", body = corral_sdk::ErrorBody),
        (status = 429, description = "The model's queue, the caller's concurrent answers or the daily token allowance is full", body = corral_sdk::ErrorBody),
        (status = 503, description = "The model is not downloaded or its backend is missing", body = corral_sdk::ErrorBody),
    ))]
pub async fn regenerate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<RegenerateRequest>,
) -> ApiResult<Response> {
    let sampling = req.sampling.unwrap_or_default();
    let events = chat::start(&state, &caller, &id, Action::Regenerate, &sampling).await?;
    Ok(sse(&state, events))
}

/// Whether a running answer was stopped.
#[derive(Debug, Serialize, ToSchema)]
pub struct StopResult {
    pub stopped: bool,
}

/// Stop the answer being written in a chat. Its stream ends with `done`,
/// the answer stored as `cancelled` with what was written so far.
#[utoipa::path(post, path = "/api/chats/{id}/stop", tag = "chats",
    params(("id" = String, Path, description = "Chat id")),
    responses(
        (status = 200, description = "`stopped` is false when no answer was running", body = StopResult),
        (status = 404, description = "No such chat of the caller", body = corral_sdk::ErrorBody),
    ))]
pub async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<StopResult>> {
    let chat = load_chat(&state, &caller, &id).await?;
    Ok(Json(StopResult {
        stopped: state.chat_runs.stop(&chat.id),
    }))
}

/// A frame a WebSocket client sends.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Send a message to a chat and stream its answer.
    Send {
        chat_id: String,
        content: String,
        sampling: Option<SamplingOverrides>,
    },
    /// Write the chat's last answer again.
    Regenerate {
        chat_id: String,
        sampling: Option<SamplingOverrides>,
    },
    /// Stop the chat's running answer.
    Stop { chat_id: String },
    /// Move the socket onto a renewed access token of the same account, so
    /// that it outlives the token it was opened with. Only access tokens
    /// (not API keys), on sockets opened with one. Nothing is answered on
    /// success; a token that is invalid, expired, revoked or of another
    /// account closes the socket (1008, policy violation).
    Auth { access_token: String },
}

/// Largest message a client may send: the longest chat message, each
/// character written as a six-byte JSON escape, and the rest of the frame.
const MAX_FRAME_BYTES: usize = 6 * crate::chat::MAX_MESSAGE_CHARS + 64 * 1024;

/// Events queued for a socket's client. Answers wait for room; a client
/// that takes none for [`SEND_WAIT`] is not reading, and its socket ends.
const OUT_QUEUE: usize = 256;
const SEND_WAIT: Duration = Duration::from_secs(10);

/// Chat over a WebSocket.
///
/// The client sends JSON text frames (`ClientFrame`): `send`, `regenerate`
/// and `stop`, each naming a chat. The server answers with `ChatEvent`
/// objects, each carrying its `chat_id`, for any number of chats at once.
/// A frame that is not a valid command gets an `error` event and the
/// socket stays open; one that is not a WebSocket text message of at most
/// about 650 KiB closes it (1009 too big, 1007 not UTF-8, 1002 otherwise).
/// Closing the socket stops its running answers. A client must read its
/// events: answers wait for it, and one whose refusals find no room for
/// 10 s is closed. Browsers, which
/// cannot set headers on the handshake, may pass the token as the
/// `access_token` query parameter.
///
/// The socket closes (1008, policy violation) when the access token it was
/// opened with expires. To keep it open, send the renewed access token
/// before then: `{"type":"auth","access_token":"<jwt>"}`. It is checked like
/// the handshake's and must belong to the same account; the socket then
/// lasts until the new token expires. Nothing is answered on success; a
/// token that is invalid or of another account closes the socket (1008).
/// Sockets opened with an API key cannot be renewed this way.
#[utoipa::path(get, path = "/api/chats/ws", tag = "chats",
    responses(
        (status = 101, description = "Switched to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake", body = corral_sdk::ErrorBody),
        (status = 409, description = "The account has `max_websockets_per_user` chat WebSockets open", body = corral_sdk::ErrorBody),
        (status = 503, description = "All accounts together have `max_websockets` open", body = corral_sdk::ErrorBody),
    ))]
pub async fn websocket(
    State(state): State<AppState>,
    caller: Caller,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let upgrade = upgrade.map_err(|r| {
        AppError::BadRequest(format!(
            "this endpoint speaks WebSocket; send a WebSocket handshake ({})",
            r.body_text()
        ))
    })?;
    let slot = state.chat_runs.open_socket(
        caller.id(),
        state.config.max_websockets_per_user,
        state.config.max_websockets,
    )?;
    Ok(upgrade
        // A browser that signed in with the subprotocol needs it answered.
        .protocols([crate::policy::BEARER_PROTOCOL])
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| session(socket, state, caller, slot))
        .into_response())
}

async fn session(socket: WebSocket, state: AppState, mut caller: Caller, slot: SocketSlot) {
    let _slot = slot;
    let _open = state.shutdown.hold();
    let (mut sink, mut incoming) = socket.split();
    let (out, mut outgoing) = mpsc::channel::<ChatEvent>(OUT_QUEUE);
    let (close, mut closing) = oneshot::channel::<CloseFrame>();
    let mut close = Some(close);
    let shutdown = state.shutdown.clone();
    let writer = tokio::spawn(async move {
        let farewell = loop {
            tokio::select! {
                biased;
                Ok(frame) = &mut closing => {
                    // What was queued before (the error saying why) goes
                    // out first.
                    for _ in 0..64 {
                        let Ok(event) = outgoing.try_recv() else { break };
                        if send_event(&mut sink, &event).await.is_err() {
                            break;
                        }
                    }
                    break Some(frame);
                }
                event = outgoing.recv() => {
                    let Some(event) = event else { break None };
                    if send_event(&mut sink, &event).await.is_err() {
                        break None;
                    }
                }
            }
        };
        let farewell = farewell.or_else(|| {
            shutdown.has_begun().then(|| CloseFrame {
                code: close_code::AWAY,
                reason: "the server is shutting down".into(),
            })
        });
        if let Some(frame) = farewell {
            let _ = sink.send(WsMessage::Close(Some(frame))).await;
        }
        let _ = sink.close().await;
    });
    // The credential the socket was opened with is checked again for every
    // frame, every few seconds and when it expires: a password change or
    // reset, a disabled account or a revoked API key ends the socket.
    let mut recheck =
        tokio::time::interval_at(tokio::time::Instant::now() + RECHECK_EVERY, RECHECK_EVERY);
    let expiry = tokio::time::sleep(until(caller.expires_at()));
    tokio::pin!(expiry);
    loop {
        // At shutdown the socket takes no new commands; its running answers
        // finish (or are stopped) and reach the client before it closes.
        let frame = tokio::select! {
            frame = incoming.next() => frame,
            () = state.shutdown.begun() => break,
            _ = recheck.tick() => match policy::recheck(state.store.as_ref(), &caller).await {
                Err(err) if ends_access(&err) => {
                    end(&out, &mut close, err, close_code::POLICY);
                    break;
                }
                _ => continue,
            },
            () = &mut expiry => {
                let expired = AppError::Unauthorized(
                    "the access token expired; sign in again".into(),
                );
                end(&out, &mut close, expired, close_code::POLICY);
                break;
            }
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            // Too big, not UTF-8 or not WebSocket: said in the close frame.
            Some(Err(err)) => {
                let text = err.to_string();
                let (code, err) = if text.contains("Space limit exceeded") {
                    let limit = MAX_FRAME_BYTES >> 10;
                    let why = format!("the message is too big (at most {limit} KiB)");
                    (close_code::SIZE, AppError::PayloadTooLarge(why))
                } else if text.contains("UTF-8") {
                    let why = "a text frame is not UTF-8".to_owned();
                    (close_code::INVALID, AppError::BadRequest(why))
                } else {
                    let why = format!("the frame could not be read: {text}");
                    (close_code::PROTOCOL, AppError::BadRequest(why))
                };
                end(&out, &mut close, err, code);
                break;
            }
            None => break,
        };
        let text = match frame {
            WsMessage::Text(text) => text,
            WsMessage::Close(_) => break,
            WsMessage::Binary(_) => {
                let err = AppError::BadRequest("send JSON text frames".into());
                if !refuse(&out, None, err).await {
                    break;
                }
                continue;
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
        };
        let frame = match serde_json::from_str::<ClientFrame>(text.as_str()) {
            Ok(frame) => frame,
            Err(err) => {
                let err =
                    AppError::MalformedJson(format!("the frame is not a valid command: {err}"));
                if !refuse(&out, None, err).await {
                    break;
                }
                continue;
            }
        };
        match policy::recheck(state.store.as_ref(), &caller).await {
            Ok(user) => caller.user = user,
            Err(err) if ends_access(&err) => {
                end(&out, &mut close, err, close_code::POLICY);
                break;
            }
            Err(err) => {
                if !refuse(&out, None, err).await {
                    break;
                }
                continue;
            }
        }
        let (chat_id, action, sampling) = match frame {
            ClientFrame::Auth { access_token } => {
                match renew(&state, &caller, &access_token).await {
                    Ok(renewed) => {
                        caller = renewed;
                        expiry
                            .as_mut()
                            .reset(tokio::time::Instant::now() + until(caller.expires_at()));
                    }
                    Err(err) if ends_access(&err) => {
                        end(&out, &mut close, err, close_code::POLICY);
                        break;
                    }
                    Err(err) => {
                        if !refuse(&out, None, err).await {
                            break;
                        }
                    }
                }
                continue;
            }
            ClientFrame::Stop { chat_id } => {
                match load_chat(&state, &caller, &chat_id).await {
                    Ok(_) => {
                        state.chat_runs.stop(&chat_id);
                    }
                    Err(err) => {
                        if !refuse(&out, Some(chat_id), err).await {
                            break;
                        }
                    }
                }
                continue;
            }
            ClientFrame::Send {
                chat_id,
                content,
                sampling,
            } => (chat_id, Action::Send(content), sampling),
            ClientFrame::Regenerate { chat_id, sampling } => {
                (chat_id, Action::Regenerate, sampling)
            }
        };
        let sampling = sampling.unwrap_or_default();
        match chat::start(&state, &caller, &chat_id, action, &sampling).await {
            Ok(mut events) => {
                let out = out.clone();
                tokio::spawn(async move {
                    // Ends when the answer ends, or when the socket is gone
                    // (dropping `events` then stops the answer).
                    loop {
                        tokio::select! {
                            event = events.recv() => {
                                let Some(event) = event else { break };
                                if out.send(event).await.is_err() {
                                    break;
                                }
                            }
                            () = out.closed() => break,
                        }
                    }
                });
            }
            Err(err) => {
                if !refuse(&out, Some(chat_id), err).await {
                    break;
                }
            }
        }
    }
    drop(out);
    if state.shutdown.has_begun() {
        let _ = writer.await;
        return;
    }
    // Let what is queued (a last error) go out; answers still running keep
    // the writer alive, and stop when it is aborted.
    let abort = writer.abort_handle();
    if tokio::time::timeout(Duration::from_millis(200), writer)
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// The socket's caller on `access_token`, which must be a valid access
/// token of the same account, for a socket opened with an access token.
async fn renew(state: &AppState, caller: &Caller, access_token: &str) -> Result<Caller, AppError> {
    if !matches!(caller.credential, Credential::AccessToken { .. }) {
        return Err(AppError::Unauthorized(
            "this socket was opened with an API key; `auth` frames renew access tokens only".into(),
        ));
    }
    if access_token.starts_with(crate::auth::API_KEY_PREFIX) {
        return Err(AppError::Unauthorized(
            "an `auth` frame takes an access token, not an API key".into(),
        ));
    }
    let renewed = policy::resolve(state, access_token).await?;
    if renewed.user.disabled {
        return Err(AppError::AccountDisabled);
    }
    if renewed.id() != caller.id() {
        return Err(AppError::Unauthorized(
            "the access token belongs to another account".into(),
        ));
    }
    Ok(renewed)
}

/// Ends a socket (its access is over, or it sent what cannot be read): an
/// `error` event says why, if there is room for it, then a close frame
/// with `code` and the same reason.
fn end(
    out: &mpsc::Sender<ChatEvent>,
    close: &mut Option<oneshot::Sender<CloseFrame>>,
    err: AppError,
    code: u16,
) {
    let mut reason = err.to_string();
    // A close reason has at most 123 bytes.
    while reason.len() > 123 {
        reason.pop();
    }
    let _ = out.try_send(error_event(None, err));
    if let Some(close) = close.take() {
        let _ = close.send(CloseFrame {
            code,
            reason: reason.into(),
        });
    }
}

async fn send_event(
    sink: &mut futures::stream::SplitSink<WebSocket, WsMessage>,
    event: &ChatEvent,
) -> Result<(), axum::Error> {
    match serde_json::to_string(event) {
        Ok(text) => sink.send(WsMessage::Text(text.into())).await,
        Err(_) => Ok(()),
    }
}

fn error_event(chat_id: Option<String>, err: AppError) -> ChatEvent {
    ChatEvent::Error {
        chat_id,
        error: err.body(),
        message: None,
    }
}

/// Queues an `error` event saying why a frame was refused. False when the
/// client took no event for [`SEND_WAIT`]: it sends without reading, and
/// its socket ends (reading its frames stops while it is full, so what it
/// sends costs no memory here).
async fn refuse(out: &mpsc::Sender<ChatEvent>, chat_id: Option<String>, err: AppError) -> bool {
    let sent = tokio::time::timeout(SEND_WAIT, out.send(error_event(chat_id, err))).await;
    matches!(sent, Ok(Ok(())))
}
