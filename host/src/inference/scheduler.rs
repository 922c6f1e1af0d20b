//! Admission to models: one bounded queue per model, fair across users.
//!
//! A model serves at most `capacity` generations at once (its backend
//! batches them); the rest wait. Waiting requests are admitted round-robin
//! by user, so one user's burst cannot starve others, and each waiter can
//! watch its position. Dropping a waiting [`Ticket`] leaves the queue;
//! dropping a [`Permit`] frees the slot for the next waiter.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, watch};

/// Limits of the scheduler.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Requests that may wait per model.
    pub max_waiting: usize,
    /// Generations one user may have running or waiting, over all models.
    pub per_user: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_waiting: 64,
            per_user: 4,
        }
    }
}

/// Why a request was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// `model` is the registry's id, for logs; the message names no
    /// model (the one full may be a replica the caller cannot see).
    #[error("the model's queue is full; try again shortly")]
    QueueFull { model: String },
    #[error("you already have {limit} generations running or waiting; wait for one to finish")]
    UserLimit { limit: usize },
}

struct Waiter {
    id: u64,
    user: String,
    admit: oneshot::Sender<Permit>,
    position: watch::Sender<usize>,
}

#[derive(Default)]
struct ModelQueue {
    capacity: usize,
    running: usize,
    /// Waiters per user, in arrival order.
    waiting: HashMap<String, VecDeque<Waiter>>,
    /// Users with waiters, in the order they get their next turn.
    turns: VecDeque<String>,
}

impl ModelQueue {
    fn waiting_len(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }

    /// Waiter ids in the order they will be admitted.
    fn order(&self) -> Vec<u64> {
        let mut cursors: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::with_capacity(self.waiting_len());
        loop {
            let before = out.len();
            for user in &self.turns {
                let cursor = cursors.entry(user.as_str()).or_default();
                if let Some(w) = self.waiting.get(user).and_then(|q| q.get(*cursor)) {
                    out.push(w.id);
                    *cursor += 1;
                }
            }
            if out.len() == before {
                return out;
            }
        }
    }

    fn publish_positions(&self) {
        for (index, id) in self.order().into_iter().enumerate() {
            if let Some(w) = self.waiting.values().flatten().find(|w| w.id == id) {
                // A closed receiver only means the waiter stopped watching.
                let _ = w.position.send(index + 1);
            }
        }
    }

    /// Takes the next waiter in fair order.
    fn next_waiter(&mut self) -> Option<Waiter> {
        while let Some(user) = self.turns.pop_front() {
            let Some(queue) = self.waiting.get_mut(&user) else {
                continue;
            };
            let Some(waiter) = queue.pop_front() else {
                self.waiting.remove(&user);
                continue;
            };
            if queue.is_empty() {
                self.waiting.remove(&user);
            } else {
                self.turns.push_back(user);
            }
            return Some(waiter);
        }
        None
    }

    fn remove(&mut self, id: u64) -> Option<Waiter> {
        let user = self
            .waiting
            .iter()
            .find(|(_, q)| q.iter().any(|w| w.id == id))
            .map(|(u, _)| u.clone())?;
        let queue = self.waiting.get_mut(&user)?;
        let index = queue.iter().position(|w| w.id == id)?;
        let waiter = queue.remove(index);
        if queue.is_empty() {
            self.waiting.remove(&user);
            self.turns.retain(|u| u != &user);
        }
        waiter
    }
}

#[derive(Default)]
struct State {
    models: HashMap<String, ModelQueue>,
    /// Running plus waiting generations per user.
    per_user: HashMap<String, usize>,
    next_id: u64,
}

/// The admission queues of every model.
#[derive(Clone)]
pub struct Scheduler {
    state: Arc<Mutex<State>>,
    limits: QueueLimits,
}

/// A place in a model's queue. Await [`Ticket::admitted`] for the permit.
pub struct Ticket {
    id: u64,
    model: String,
    scheduler: Scheduler,
    admit: Option<oneshot::Receiver<Permit>>,
    position: watch::Receiver<usize>,
}

/// A running generation's slot; dropping it admits the next waiter.
pub struct Permit {
    model: String,
    user: String,
    scheduler: Scheduler,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("model", &self.model)
            .finish()
    }
}

impl Scheduler {
    pub fn new(limits: QueueLimits) -> Self {
        Scheduler {
            state: Arc::default(),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a request of `user` for `model`, which serves `capacity`
    /// generations at once.
    pub fn enqueue(&self, model: &str, capacity: usize, user: &str) -> Result<Ticket, Rejected> {
        let mut state = self.lock();
        let held = state.per_user.get(user).copied().unwrap_or(0);
        if held >= self.limits.per_user {
            return Err(Rejected::UserLimit {
                limit: self.limits.per_user,
            });
        }
        state.next_id += 1;
        let id = state.next_id;
        let queue = state.models.entry(model.to_owned()).or_default();
        queue.capacity = capacity.max(1);
        if queue.waiting_len() >= self.limits.max_waiting && queue.running >= queue.capacity {
            return Err(Rejected::QueueFull {
                model: model.to_owned(),
            });
        }
        let (admit_tx, admit_rx) = oneshot::channel();
        let (position_tx, position_rx) = watch::channel(0);
        let waiter = Waiter {
            id,
            user: user.to_owned(),
            admit: admit_tx,
            position: position_tx,
        };
        let queue_was_empty = !queue.waiting.contains_key(user);
        queue
            .waiting
            .entry(user.to_owned())
            .or_default()
            .push_back(waiter);
        if queue_was_empty {
            queue.turns.push_back(user.to_owned());
        }
        *state.per_user.entry(user.to_owned()).or_default() += 1;
        self.admit_waiting(&mut state, model);
        Ok(Ticket {
            id,
            model: model.to_owned(),
            scheduler: self.clone(),
            admit: Some(admit_rx),
            position: position_rx,
        })
    }

    /// Admits waiters while the model has free slots, then republishes
    /// positions.
    fn admit_waiting(&self, state: &mut State, model: &str) {
        loop {
            let Some(queue) = state.models.get_mut(model) else {
                return;
            };
            if queue.running >= queue.capacity {
                break;
            }
            let Some(waiter) = queue.next_waiter() else {
                break;
            };
            queue.running += 1;
            let permit = Permit {
                model: model.to_owned(),
                user: waiter.user.clone(),
                scheduler: self.clone(),
            };
            let _ = waiter.position.send(0);
            if let Err(permit) = waiter.admit.send(permit) {
                // Only a leaked ticket has no receiver. Take the slot back
                // here: the permit's own drop would lock the state again.
                std::mem::forget(permit);
                queue.running -= 1;
                decrement(&mut state.per_user, &waiter.user);
            }
        }
        if let Some(queue) = state.models.get(model) {
            queue.publish_positions();
        }
    }

    fn release(&self, model: &str, user: &str) {
        let mut state = self.lock();
        if let Some(queue) = state.models.get_mut(model) {
            queue.running = queue.running.saturating_sub(1);
        }
        decrement(&mut state.per_user, user);
        self.admit_waiting(&mut state, model);
    }

    fn leave(&self, model: &str, id: u64) {
        let mut state = self.lock();
        let removed = state.models.get_mut(model).and_then(|q| q.remove(id));
        if let Some(waiter) = removed {
            decrement(&mut state.per_user, &waiter.user);
            self.admit_waiting(&mut state, model);
        }
    }

    /// A model's generations running and waiting.
    pub fn load(&self, model: &str) -> (usize, usize) {
        let state = self.lock();
        state
            .models
            .get(model)
            .map_or((0, 0), |q| (q.running, q.waiting_len()))
    }

    /// Waiting requests per model.
    pub fn depths(&self) -> Vec<(String, usize, usize)> {
        let state = self.lock();
        let mut out: Vec<_> = state
            .models
            .iter()
            .map(|(m, q)| (m.clone(), q.running, q.waiting_len()))
            .collect();
        out.sort();
        out
    }
}

fn decrement(map: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Ticket {
    /// Current 1-based position in the queue; 0 once admitted.
    pub fn position(&self) -> usize {
        *self.position.borrow()
    }

    /// Waits for the next change: a new position, or admission.
    pub async fn next_update(&mut self) -> Update {
        let Some(admit) = self.admit.as_mut() else {
            return std::future::pending().await;
        };
        tokio::select! {
            biased;
            permit = admit => match permit {
                Ok(permit) => {
                    self.admit = None;
                    Update::Admitted(permit)
                }
                // The scheduler never drops a sender without sending.
                Err(_) => std::future::pending().await,
            },
            changed = self.position.changed() => match changed {
                Ok(()) => Update::Position(*self.position.borrow()),
                Err(_) => std::future::pending().await,
            },
        }
    }

    /// Waits for the slot.
    pub async fn admitted(&mut self) -> Permit {
        loop {
            if let Update::Admitted(permit) = self.next_update().await {
                return permit;
            }
        }
    }
}

/// A change of a [`Ticket`].
pub enum Update {
    /// The 1-based place in the queue.
    Position(usize),
    Admitted(Permit),
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(mut rx) = self.admit.take() {
            match rx.try_recv() {
                // Admitted but never claimed: the permit's drop frees it.
                Ok(permit) => drop(permit),
                Err(_) => self.scheduler.leave(&self.model, self.id),
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.scheduler.release(&self.model, &self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_waiting: usize, per_user: usize) -> QueueLimits {
        QueueLimits {
            max_waiting,
            per_user,
        }
    }

    #[tokio::test]
    async fn admits_up_to_capacity_then_queues() {
        let s = Scheduler::new(limits(10, 10));
        let mut a = s.enqueue("m", 2, "u1").unwrap();
        let mut b = s.enqueue("m", 2, "u2").unwrap();
        let c = s.enqueue("m", 2, "u3").unwrap();
        let pa = a.admitted().await;
        let _pb = b.admitted().await;
        assert_eq!(c.position(), 1);
        assert_eq!(s.depths(), vec![("m".to_owned(), 2, 1)]);
        drop(pa);
        let mut c = c;
        let _pc = c.admitted().await;
        assert_eq!(c.position(), 0);
    }

    #[tokio::test]
    async fn a_burst_does_not_starve_other_users() {
        let s = Scheduler::new(limits(100, 100));
        let mut running = s.enqueue("m", 1, "busy").unwrap();
        let first = running.admitted().await;
        let burst: Vec<Ticket> = (0..5).map(|_| s.enqueue("m", 1, "busy").unwrap()).collect();
        let other = s.enqueue("m", 1, "quiet").unwrap();
        // Round-robin: the quiet user's one request is second in line, not
        // sixth.
        assert_eq!(burst[0].position(), 1);
        assert_eq!(other.position(), 2);
        assert_eq!(burst[1].position(), 3);
        drop(first);
        drop(burst);
        let mut other = other;
        let _p = other.admitted().await;
    }

    #[tokio::test]
    async fn leaving_the_queue_moves_others_up() {
        let s = Scheduler::new(limits(10, 10));
        let mut running = s.enqueue("m", 1, "a").unwrap();
        let _p = running.admitted().await;
        let b = s.enqueue("m", 1, "b").unwrap();
        let c = s.enqueue("m", 1, "c").unwrap();
        assert_eq!(c.position(), 2);
        drop(b);
        assert_eq!(c.position(), 1);
        assert_eq!(s.depths(), vec![("m".to_owned(), 1, 1)]);
    }

    #[tokio::test]
    async fn limits_are_enforced_and_released() {
        let s = Scheduler::new(limits(1, 2));
        let mut a = s.enqueue("m", 1, "u").unwrap();
        let pa = a.admitted().await;
        let _b = s.enqueue("m", 1, "u").unwrap();
        assert_eq!(
            s.enqueue("m", 1, "u").err(),
            Some(Rejected::UserLimit { limit: 2 })
        );
        assert_eq!(
            s.enqueue("m", 1, "v").err(),
            Some(Rejected::QueueFull { model: "m".into() })
        );
        drop(pa);
        // u's waiting request was admitted; u may queue one more.
        assert!(s.enqueue("other", 1, "u").is_ok());
    }

    #[tokio::test]
    async fn an_unclaimed_admission_is_released_on_drop() {
        let s = Scheduler::new(limits(10, 10));
        let mut a = s.enqueue("m", 1, "a").unwrap();
        let pa = a.admitted().await;
        let b = s.enqueue("m", 1, "b").unwrap();
        drop(pa); // b is admitted but never claims its permit
        drop(b);
        assert_eq!(s.depths(), vec![("m".to_owned(), 0, 0)]);
    }
}
