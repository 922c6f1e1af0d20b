//! Stopping the server without losing what users saw: one signal that
//! long-lived streams watch, and a count of the streams still open so the
//! server can wait for them to say goodbye.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

/// The server's stop signal, shared through the application state.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    open_streams: Arc<AtomicUsize>,
}

impl Shutdown {
    /// Starts the shutdown: event streams end, WebSockets close once their
    /// answers are done.
    pub fn begin(&self) {
        self.token.cancel();
    }

    pub fn has_begun(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when the shutdown begins.
    pub async fn begun(&self) {
        self.token.cancelled().await;
    }

    /// Counts a long-lived stream as open until the guard is dropped.
    pub fn hold(&self) -> StreamGuard {
        self.open_streams.fetch_add(1, Ordering::SeqCst);
        StreamGuard {
            open_streams: self.open_streams.clone(),
        }
    }

    /// Streams still open.
    pub fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::SeqCst)
    }

    /// Waits until every held stream has closed, or `deadline`; true if
    /// none is open.
    pub async fn wait_streams_closed(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            if self.open_streams() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `stream` until the shutdown begins, then `last` and the end. The
    /// stream counts as open while it lives.
    pub fn until_shutdown<S>(&self, stream: S, last: S::Item) -> impl Stream<Item = S::Item>
    where
        S: Stream + Send + 'static,
        S::Item: Send + 'static,
    {
        let guard = self.hold();
        stream
            .take_until(self.token.clone().cancelled_owned())
            .chain(futures::stream::once(async move {
                drop(guard);
                last
            }))
    }
}

/// Keeps a stream counted as open; see [`Shutdown::hold`].
#[derive(Debug)]
pub struct StreamGuard {
    open_streams: Arc<AtomicUsize>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_ends_with_its_last_item_when_the_shutdown_begins() {
        let shutdown = Shutdown::default();
        let endless = futures::stream::pending::<u32>();
        let mut stream = Box::pin(shutdown.until_shutdown(endless, 7));
        assert_eq!(shutdown.open_streams(), 1);
        shutdown.begin();
        assert_eq!(stream.next().await, Some(7));
        assert_eq!(stream.next().await, None);
        drop(stream);
        assert_eq!(shutdown.open_streams(), 0);
        let soon = tokio::time::Instant::now() + Duration::from_millis(10);
        assert!(shutdown.wait_streams_closed(soon).await);
    }
}
