//! The host's event bus: things that happen in the background (downloads,
//! status changes), published to whoever listens — `GET /api/events` relays
//! them to technicians as Server-Sent Events.

use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::model::ModelStatus;

/// One event. Serialized with a `type` tag, e.g.
/// `{"type":"model_download","model_id":"…","bytes":1024,…}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Progress of a model download (at most a few per second per model).
    ModelDownload {
        model_id: String,
        bytes: u64,
        /// `null` when the server does not say.
        total: Option<u64>,
        /// Bytes per second over the last seconds.
        rate: f64,
        eta_secs: Option<u64>,
    },
    /// A model's status changed.
    ModelStatus {
        model_id: String,
        status: ModelStatus,
        error: Option<String>,
    },
    /// A model was removed from the registry.
    ModelDeleted { model_id: String },
    /// The server is stopping; the stream ends after this event.
    ShuttingDown,
}

impl Event {
    /// The SSE event name: the `type` tag.
    pub fn name(&self) -> &'static str {
        match self {
            Event::ModelDownload { .. } => "model_download",
            Event::ModelStatus { .. } => "model_status",
            Event::ModelDeleted { .. } => "model_deleted",
            Event::ShuttingDown => "shutting_down",
        }
    }
}

/// A broadcast channel of [`Event`]s. A slow listener misses events (it is
/// told how many) rather than holding up the publishers.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        EventBus { tx }
    }

    pub fn publish(&self, event: Event) {
        // An error only means that nobody listens right now.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(1024)
    }
}
