//! The bounded submission queue between callers and the single writer thread,
//! and the completion a caller waits on (blocking or as a future).

use crate::batch::LogBatch;
use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Locks a mutex whose data stays consistent even if a holder panicked: every
/// critical section here only moves whole values in or out.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Default)]
struct Slot {
    result: Option<Result<()>>,
    waker: Option<Waker>,
}

/// Where the writer puts one request's outcome.
#[derive(Clone, Default)]
pub(crate) struct Completion {
    inner: Arc<(Mutex<Slot>, Condvar)>,
}

impl Completion {
    pub(crate) fn complete(&self, result: Result<()>) {
        let (slot, ready) = &*self.inner;
        let mut slot = lock(slot);
        slot.result = Some(result);
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
        ready.notify_all();
    }

    pub(crate) fn wait(&self) -> Result<()> {
        let (slot, ready) = &*self.inner;
        let mut slot = lock(slot);
        loop {
            if let Some(result) = slot.result.take() {
                return result;
            }
            slot = ready.wait(slot).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn poll_result(&self, cx: &Context<'_>) -> Poll<Result<()>> {
        let mut slot = lock(&self.inner.0);
        match slot.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

pub(crate) struct Request {
    pub batch: LogBatch,
    pub done: Completion,
}

struct Inner {
    requests: VecDeque<Request>,
    queued_bytes: usize,
    closed: bool,
    /// Async submitters waiting for room.
    waiting: Vec<Waker>,
}

/// A queue bounded in bytes: submitters block (or stay pending) while it is
/// full, so memory stays bounded whatever the offered load.
pub(crate) struct Queue {
    inner: Mutex<Inner>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity_bytes: usize,
}

/// What the writer gets from [`Queue::pop_group`].
pub(crate) enum Popped {
    Requests(Vec<Request>),
    TimedOut,
    /// Closed and drained.
    Closed,
}

impl Queue {
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                requests: VecDeque::new(),
                queued_bytes: 0,
                closed: false,
                waiting: Vec::new(),
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity_bytes,
        }
    }

    fn has_room(&self, inner: &Inner, bytes: usize) -> bool {
        // An oversized batch still goes in alone, so it cannot wait forever.
        inner.requests.is_empty() || inner.queued_bytes + bytes <= self.capacity_bytes
    }

    fn enqueue(&self, inner: &mut Inner, batch: LogBatch) -> Completion {
        let done = Completion::default();
        inner.queued_bytes += batch.size_bytes();
        inner.requests.push_back(Request {
            batch,
            done: done.clone(),
        });
        self.not_empty.notify_one();
        done
    }

    /// Queues a batch, blocking while the queue is full.
    pub(crate) fn push_blocking(&self, batch: LogBatch) -> Result<Completion> {
        let mut inner = lock(&self.inner);
        while !inner.closed && !self.has_room(&inner, batch.size_bytes()) {
            inner = self
                .not_full
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if inner.closed {
            return Err(Error::Closed);
        }
        Ok(self.enqueue(&mut inner, batch))
    }

    /// Queues a batch if there is room; otherwise hands it back and registers
    /// the task to be woken when room appears.
    fn try_push(&self, batch: LogBatch, cx: &Context<'_>) -> Result<Result<Completion, LogBatch>> {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return Err(Error::Closed);
        }
        if self.has_room(&inner, batch.size_bytes()) {
            return Ok(Ok(self.enqueue(&mut inner, batch)));
        }
        inner.waiting.push(cx.waker().clone());
        Ok(Err(batch))
    }

    /// Takes queued requests, up to about `max_bytes` (at least one), waiting up
    /// to `timeout` (forever if `None`) for the first.
    pub(crate) fn pop_group(&self, max_bytes: usize, timeout: Option<Duration>) -> Popped {
        let mut inner = lock(&self.inner);
        while inner.requests.is_empty() {
            if inner.closed {
                return Popped::Closed;
            }
            match timeout {
                None => {
                    inner = self
                        .not_empty
                        .wait(inner)
                        .unwrap_or_else(PoisonError::into_inner)
                }
                Some(timeout) => {
                    let (guard, result) = self
                        .not_empty
                        .wait_timeout(inner, timeout)
                        .unwrap_or_else(PoisonError::into_inner);
                    inner = guard;
                    if result.timed_out() && inner.requests.is_empty() {
                        return Popped::TimedOut;
                    }
                }
            }
        }
        let mut group = Vec::new();
        let mut group_bytes = 0usize;
        while let Some(next) = inner.requests.front() {
            let bytes = next.batch.size_bytes();
            if !group.is_empty() && group_bytes + bytes > max_bytes {
                break;
            }
            group_bytes += bytes;
            if let Some(request) = inner.requests.pop_front() {
                group.push(request);
            }
        }
        inner.queued_bytes -= group_bytes;
        for waker in inner.waiting.drain(..) {
            waker.wake();
        }
        self.not_full.notify_all();
        Popped::Requests(group)
    }

    pub(crate) fn close(&self) {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        for waker in inner.waiting.drain(..) {
            waker.wake();
        }
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}

/// The future returned by [`crate::Wal::write_async`].
pub struct WriteFuture {
    queue: Arc<Queue>,
    state: FutureState,
}

enum FutureState {
    Queueing(Option<LogBatch>),
    Waiting(Completion),
    Failed(Option<Error>),
}

impl WriteFuture {
    pub(crate) fn new(queue: Arc<Queue>, batch: LogBatch) -> Self {
        Self {
            queue,
            state: FutureState::Queueing(Some(batch)),
        }
    }

    pub(crate) fn failed(queue: Arc<Queue>, error: Error) -> Self {
        Self {
            queue,
            state: FutureState::Failed(Some(error)),
        }
    }
}

impl Future for WriteFuture {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                FutureState::Failed(error) => {
                    return Poll::Ready(Err(error.take().unwrap_or(Error::Closed)));
                }
                FutureState::Waiting(done) => return done.poll_result(cx),
                FutureState::Queueing(batch) => {
                    let Some(batch) = batch.take() else {
                        return Poll::Ready(Err(Error::Closed));
                    };
                    match this.queue.try_push(batch, cx) {
                        Err(error) => return Poll::Ready(Err(error)),
                        Ok(Ok(done)) => this.state = FutureState::Waiting(done),
                        Ok(Err(batch)) => {
                            this.state = FutureState::Queueing(Some(batch));
                            return Poll::Pending;
                        }
                    }
                }
            }
        }
    }
}
