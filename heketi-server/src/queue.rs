//! Heketi's asynchronous operations: `/queue/{id}` entries and the in-flight limit.
//!
//! An operation gets a queue id when it is accepted (202, `Location: /queue/<id>`). Polling
//! gives 200 with `X-Pending: true` while it runs; once it is done the next poll gives its
//! result (303 to the resource, 204, or 500 with the error) and the entry is forgotten. Entries
//! live in memory only, as in Heketi: a restart forgets them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::ids::new_id;

/// Outcome of an operation: a resource location (303), nothing (204), or an error (500).
pub type OpResult = Result<Option<String>, String>;

/// What a poll of `/queue/{id}` finds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Poll {
    /// No such entry.
    Unknown,
    /// Still running.
    Pending,
    /// Done (the entry is now gone).
    Done(OpResult),
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Option<OpResult>>,
    inflight: usize,
}

/// The queue of asynchronous operations.
pub struct Queue {
    inner: Mutex<Inner>,
    max_inflight: usize,
    /// Woken whenever an operation finishes, for polls that wait ([`Queue::poll_wait`]).
    finished: Notify,
}

/// One of the `--max-inflight` slots, held while a throttled operation runs.
pub struct Slot(Arc<Queue>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.0.lock();
        g.inflight = g.inflight.saturating_sub(1);
    }
}

impl Queue {
    /// A queue allowing `max_inflight` throttled operations at once.
    pub fn new(max_inflight: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            max_inflight,
            finished: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot, or `None` when `max_inflight` operations are already running (429).
    pub fn try_slot(self: &Arc<Self>) -> Option<Slot> {
        let mut g = self.lock();
        if g.inflight >= self.max_inflight {
            return None;
        }
        g.inflight += 1;
        Some(Slot(Arc::clone(self)))
    }

    /// Throttled operations running now.
    pub fn inflight(&self) -> usize {
        self.lock().inflight
    }

    /// Registers a new running operation and returns its queue id.
    pub fn start(&self) -> String {
        let id = new_id();
        self.lock().entries.insert(id.clone(), None);
        id
    }

    /// Records the outcome of operation `id`.
    pub fn finish(&self, id: &str, result: OpResult) {
        if let Some(e) = self.lock().entries.get_mut(id) {
            *e = Some(result);
        }
        self.finished.notify_waiters();
    }

    /// Like [`Queue::poll`], but while the operation runs, waits up to `wait` for it to finish
    /// (a poll with `Prefer: wait=N`, our extension: Heketi answers at once).
    pub async fn poll_wait(&self, id: &str, wait: Duration) -> Poll {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the look, so a finish between the two is not missed.
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            match self.poll(id) {
                Poll::Pending => {}
                other => return other,
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return self.poll(id);
            }
        }
    }

    /// Looks at entry `id`; a finished entry is removed by this call.
    pub fn poll(&self, id: &str) -> Poll {
        let mut g = self.lock();
        match g.entries.get(id) {
            None => Poll::Unknown,
            Some(None) => Poll::Pending,
            Some(Some(_)) => match g.entries.remove(id) {
                Some(Some(r)) => Poll::Done(r),
                _ => Poll::Unknown,
            },
        }
    }

    /// Operations not finished yet.
    pub fn running(&self) -> usize {
        self.lock().entries.values().filter(|e| e.is_none()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiting_poll_answers_when_the_operation_finishes_or_at_the_wait() {
        let q = Queue::new(2);
        let id = q.start();
        let started = std::time::Instant::now();
        assert_eq!(
            q.poll_wait(&id, Duration::from_millis(200)).await,
            Poll::Pending
        );
        assert!(started.elapsed() >= Duration::from_millis(200));

        let finisher = {
            let q = Arc::clone(&q);
            let id = id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                q.finish(&id, Ok(None));
            })
        };
        // Far longer than the finish takes: the answer comes with the finish, not the wait.
        let got = tokio::time::timeout(
            Duration::from_secs(20),
            q.poll_wait(&id, Duration::from_secs(30)),
        )
        .await
        .expect("answered before the wait ended");
        assert_eq!(got, Poll::Done(Ok(None)));
        finisher.await.expect("join");
        assert_eq!(
            q.poll_wait("nope", Duration::from_secs(30)).await,
            Poll::Unknown
        );
    }

    #[test]
    fn completed_entries_are_read_once() {
        let q = Queue::new(2);
        let id = q.start();
        assert_eq!(q.poll(&id), Poll::Pending);
        assert_eq!(q.running(), 1);
        q.finish(&id, Ok(Some("/volumes/x".into())));
        assert_eq!(q.running(), 0);
        assert_eq!(q.poll(&id), Poll::Done(Ok(Some("/volumes/x".into()))));
        assert_eq!(q.poll(&id), Poll::Unknown);
        assert_eq!(q.poll("nope"), Poll::Unknown);
    }

    #[test]
    fn slots_limit_inflight() {
        let q = Queue::new(2);
        let a = q.try_slot();
        let b = q.try_slot();
        assert!(a.is_some() && b.is_some());
        assert!(q.try_slot().is_none());
        drop(a);
        assert_eq!(q.inflight(), 1);
        assert!(q.try_slot().is_some());
    }
}
