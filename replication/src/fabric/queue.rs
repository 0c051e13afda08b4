//! One lane's outgoing queue, bounded in bytes. The ready loop pushes
//! without ever waiting (a full or disconnected lane refuses the frame at
//! once); the lane's writer task takes everything queued per wakeup. Bytes
//! stay counted until they are written, so the bound covers the batch on
//! the socket too.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::lock;

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued for the writer.
    Queued,
    /// The lane holds its bound already: dropped.
    Full,
    /// The lane has no authenticated connection: dropped.
    Down,
}

struct State {
    frames: VecDeque<Vec<u8>>,
    /// Queued plus being written.
    bytes: usize,
    connected: bool,
}

pub(crate) struct LaneQueue {
    capacity_bytes: usize,
    state: Mutex<State>,
    wake: Notify,
}

impl LaneQueue {
    pub fn new(capacity_bytes: usize) -> LaneQueue {
        LaneQueue {
            capacity_bytes,
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                connected: false,
            }),
            wake: Notify::new(),
        }
    }

    pub fn push(&self, frame: Vec<u8>) -> Push {
        let mut state = lock(&self.state);
        if !state.connected {
            return Push::Down;
        }
        if state.bytes + frame.len() > self.capacity_bytes {
            return Push::Full;
        }
        state.bytes += frame.len();
        state.frames.push_back(frame);
        drop(state);
        self.wake.notify_one();
        Push::Queued
    }

    /// Every queued frame; their bytes stay counted until `written`.
    pub fn take(&self) -> Vec<Vec<u8>> {
        lock(&self.state).frames.drain(..).collect()
    }

    /// A taken batch of `bytes` left (written, or lost with its connection).
    pub fn written(&self, bytes: usize) {
        let mut state = lock(&self.state);
        state.bytes = state.bytes.saturating_sub(bytes);
    }

    /// Opens the lane, or closes it dropping what is queued (stale by the
    /// time a new connection is up; raft resends).
    pub fn set_connected(&self, connected: bool) {
        let mut state = lock(&self.state);
        state.connected = connected;
        if !connected {
            let queued: usize = state.frames.drain(..).map(|f| f.len()).sum();
            state.bytes = state.bytes.saturating_sub(queued);
        }
    }

    /// Waits up to `timeout` for a push; true if one came.
    pub async fn wait(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.wake.notified())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_counts_bytes_until_written_and_a_closed_lane_refuses() {
        let queue = LaneQueue::new(10);
        assert_eq!(queue.push(vec![0; 4]), Push::Down);
        queue.set_connected(true);
        assert_eq!(queue.push(vec![0; 6]), Push::Queued);
        assert_eq!(queue.push(vec![0; 5]), Push::Full);
        let batch = queue.take();
        assert_eq!(
            queue.push(vec![0; 5]),
            Push::Full,
            "the batch in flight still counts"
        );
        queue.written(batch.iter().map(Vec::len).sum());
        assert_eq!(queue.push(vec![0; 10]), Push::Queued);
        queue.set_connected(false);
        queue.set_connected(true);
        assert_eq!(
            queue.push(vec![0; 10]),
            Push::Queued,
            "closing dropped the queued bytes"
        );
    }
}
