//! The inference runtime: backend libraries, loaded models, admission
//! queues, and the generation jobs that tie them together.
//!
//! A job waits in its model's queue (reporting its position), gets the
//! model (loading it on first use), renders the chat template, and streams
//! the backend's events to the caller. A caller that goes away cancels its
//! job: the backend stops within a decode step and frees the slot.

pub mod backends;
pub mod history;
pub mod isolated;
pub mod manager;
pub mod scheduler;
pub mod worker;

use std::sync::Arc;

use corral_sdk::backend::{
    BackendError, CancelToken, ChatMessage, GenerateRequest, GenerateSummary, SamplingParams,
    TokenEvent, Truncation,
};
use tokio::sync::mpsc;

use self::manager::{LoadSpec, LoadedModel, ModelManager};
use self::scheduler::{Rejected, Scheduler, Update};

/// Errors of the runtime.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InferenceError {
    #[error("no `{0}` backend is installed on this host")]
    BackendMissing(String),
    /// `bad_file` when the backend found the file itself unusable (not a
    /// passing shortage such as memory).
    #[error("model `{model}` could not be loaded: {reason}")]
    Load {
        model: String,
        reason: String,
        bad_file: bool,
    },
    #[error("{0}")]
    Capacity(String),
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("inference failed: {0}")]
    Internal(String),
}

/// What to generate from.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Raw text, with the model's BOS token in front.
    Text(String),
    /// A stored conversation, rendered with the chat template (system
    /// messages first) after dropping its oldest turns (never a system
    /// message, never the last message) until prompt and `max_tokens` fit
    /// the context. Turns go in blocks, so that the prompt's start stays
    /// the same for many turns and the backend can reuse its cache (see
    /// [`history::fit_history`]).
    History(Vec<ChatMessage>),
}

/// One generation.
#[derive(Debug, Clone)]
pub struct Job {
    pub spec: LoadSpec,
    pub user_id: String,
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    pub truncation: Truncation,
    /// Names the conversation (a chat's id): its turns keep to the slot
    /// that holds its cache, and only its own requests read that cache.
    /// Without one, the user's requests share theirs. Another user's
    /// cache is never read, whatever the key.
    pub cache_key: Option<String>,
}

/// What a job reports, in order: positions while queued, `Started`, text,
/// then exactly one of `Done` or `Failed`.
#[derive(Debug, Clone)]
pub enum JobEvent {
    Queued { position: usize },
    Started { prompt_tokens: u32 },
    Text(String),
    Done(GenerateSummary),
    Failed(InferenceError),
}

/// The runtime.
#[derive(Clone)]
pub struct Inference {
    pub manager: ModelManager,
    pub scheduler: Scheduler,
}

impl Inference {
    pub fn new(manager: ModelManager, scheduler: Scheduler) -> Self {
        Inference { manager, scheduler }
    }

    /// Queues a job and returns its events. Fails at once when the queue
    /// or the user's allowance is full. Dropping the receiver cancels.
    pub fn submit(&self, job: Job) -> Result<mpsc::UnboundedReceiver<JobEvent>, InferenceError> {
        self.submit_with_cancel(job, CancelToken::new())
    }

    /// Like [`Self::submit`], with a token that stops the generation while
    /// its events keep coming: a cancelled job still ends with `Done`,
    /// whose finish reason says it was cancelled. (A job cancelled while
    /// it waits in the queue starts and stops at once.)
    pub fn submit_with_cancel(
        &self,
        job: Job,
        cancel: CancelToken,
    ) -> Result<mpsc::UnboundedReceiver<JobEvent>, InferenceError> {
        let capacity = job.spec.request.slots.max(1) as usize;
        let ticket = self
            .scheduler
            .enqueue(&job.spec.key, capacity, &job.user_id)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let manager = self.manager.clone();
        tokio::spawn(async move {
            let mut ticket = ticket;
            let mut position = ticket.position();
            let permit = loop {
                if position > 0 && tx.send(JobEvent::Queued { position }).is_err() {
                    return;
                }
                tokio::select! {
                    update = ticket.next_update() => match update {
                        Update::Admitted(permit) => break permit,
                        Update::Position(p) => position = p,
                    },
                    () = tx.closed() => return,
                }
            };
            let result = match manager.get(&job.spec).await {
                Ok(loaded) => run(loaded, job, cancel, tx.clone()).await,
                Err(err) => Err(err),
            };
            drop(permit);
            let _ = tx.send(match result {
                Ok(summary) => JobEvent::Done(summary),
                Err(err) => JobEvent::Failed(err),
            });
        });
        Ok(rx)
    }
}

/// Renders the prompt and generates on the blocking pool, forwarding events.
async fn run(
    loaded: Arc<LoadedModel>,
    job: Job,
    cancel: CancelToken,
    tx: mpsc::UnboundedSender<JobEvent>,
) -> Result<GenerateSummary, InferenceError> {
    let watcher = {
        let cancel = cancel.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            tx.closed().await;
            cancel.cancel();
        })
    };
    let result = tokio::task::spawn_blocking(move || {
        let model = &loaded.model;
        let (prompt, add_bos) = match job.prompt {
            Prompt::Chat(messages) => (model.apply_chat_template(&messages, true)?, false),
            Prompt::Text(text) => (text, true),
            Prompt::History(messages) => {
                let prompt = history::fit_history(model.as_ref(), messages, &job.sampling)?;
                (prompt, false)
            }
        };
        let request = GenerateRequest {
            prompt,
            add_bos,
            sampling: job.sampling,
            truncation: job.truncation,
            // Caches are never shared between users: the user's id is
            // always part of the key.
            cache_key: Some(match &job.cache_key {
                Some(key) => format!("{}/{key}", job.user_id),
                None => job.user_id.clone(),
            }),
        };
        let mut sink = |event: TokenEvent| {
            let event = match event {
                TokenEvent::Started { prompt_tokens } => JobEvent::Started { prompt_tokens },
                TokenEvent::Text { text } => JobEvent::Text(text),
            };
            if tx.send(event).is_err() {
                cancel.cancel();
            }
        };
        model.generate(&request, &mut sink, &cancel)
    })
    .await;
    watcher.abort();
    match result {
        Ok(Ok(summary)) => Ok(summary),
        Ok(Err(err)) => Err(err.into()),
        Err(err) => Err(InferenceError::Internal(format!(
            "the generation task failed: {err}"
        ))),
    }
}
