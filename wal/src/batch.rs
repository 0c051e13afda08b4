//! [`LogBatch`]: what one caller wants written atomically with respect to
//! acknowledgement: entries, hard states and compactions of any streams.
//! Frames are encoded (and most of their CRC computed) by the caller's thread,
//! so the single writer only places, seals and writes them.

use crate::error::{Error, Result};
use crate::format::{self, FrameKind, HardState, UnsealedFrame};

/// One entry to append.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    pub index: u64,
    pub term: u64,
    pub payload: &'a [u8],
}

/// What one frame of a batch does to its stream, in log order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Entry {
        index: u64,
        term: u64,
    },
    HardState(HardState),
    Compact {
        index: u64,
    },
    Reset {
        index: u64,
    },
    StreamState {
        first_index: u64,
        last_index: u64,
        hard_state: HardState,
    },
}

impl Op {
    pub(crate) fn kind(&self) -> FrameKind {
        match self {
            Op::Entry { .. } => FrameKind::Entry,
            Op::HardState(_) => FrameKind::HardState,
            Op::Compact { .. } => FrameKind::Compact,
            Op::Reset { .. } => FrameKind::Reset,
            Op::StreamState { .. } => FrameKind::StreamState,
        }
    }

    /// Rebuilds the op from a parsed frame (`None` if the payload is malformed).
    pub(crate) fn from_frame(frame: &format::FrameRef<'_>) -> Option<Op> {
        Some(match frame.kind {
            FrameKind::Entry => Op::Entry {
                index: frame.index,
                term: frame.term,
            },
            FrameKind::HardState => Op::HardState(HardState::decode(frame.payload)?),
            FrameKind::Compact => Op::Compact { index: frame.index },
            FrameKind::Reset if frame.index > 0 => Op::Reset { index: frame.index },
            FrameKind::Reset => return None,
            FrameKind::StreamState => Op::StreamState {
                first_index: frame.index,
                last_index: format::read_u64(frame.payload, 0)?,
                hard_state: HardState::decode(frame.payload.get(8..)?)?,
            },
        })
    }
}

#[derive(Debug)]
pub(crate) struct BatchFrame {
    pub stream: u64,
    pub op: Op,
    pub unsealed: UnsealedFrame,
    pub payload_len: u32,
}

/// A set of writes acknowledged together.
#[derive(Debug, Default)]
pub struct LogBatch {
    pub(crate) buf: Vec<u8>,
    pub(crate) frames: Vec<BatchFrame>,
}

impl LogBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends contiguous entries to `stream`. If the first index is at or below
    /// the stream's last index, the stream's entries from there on are replaced
    /// (raft's conflict rule).
    pub fn append(&mut self, stream: u64, entries: &[EntryRef<'_>]) -> Result<()> {
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(Error::InvalidAppend {
                    stream,
                    reason: format!(
                        "entries {} and {} are not contiguous",
                        pair[0].index, pair[1].index
                    ),
                });
            }
        }
        for entry in entries {
            let op = Op::Entry {
                index: entry.index,
                term: entry.term,
            };
            self.push(stream, op, entry.payload);
        }
        Ok(())
    }

    /// Saves the stream's hard state.
    pub fn set_hard_state(&mut self, stream: u64, hard_state: HardState) {
        self.push(stream, Op::HardState(hard_state), &hard_state.encode());
    }

    /// Drops the stream's entries below `index`. Past the last index, the stream
    /// becomes empty and its next append must start at `index`.
    pub fn compact(&mut self, stream: u64, index: u64) {
        self.push(stream, Op::Compact { index }, &[]);
    }

    /// Drops every entry of the stream; its next append must be at `index`
    /// (at least 1). What installing a raft snapshot at `index - 1` does to
    /// the log, whatever it held before.
    pub fn reset(&mut self, stream: u64, index: u64) {
        self.push(
            stream,
            Op::Reset {
                index: index.max(1),
            },
            &[],
        );
    }

    pub(crate) fn push_stream_state(
        &mut self,
        stream: u64,
        first_index: u64,
        last_index: u64,
        hard_state: HardState,
    ) {
        let mut payload = [0u8; format::STREAM_STATE_PAYLOAD_BYTES];
        payload[..8].copy_from_slice(&last_index.to_le_bytes());
        payload[8..].copy_from_slice(&hard_state.encode());
        let op = Op::StreamState {
            first_index,
            last_index,
            hard_state,
        };
        self.push(stream, op, &payload);
    }

    fn push(&mut self, stream: u64, op: Op, payload: &[u8]) {
        let (index, term) = match op {
            Op::Entry { index, term } => (index, term),
            Op::Compact { index } | Op::Reset { index } => (index, 0),
            Op::StreamState { first_index, .. } => (first_index, 0),
            Op::HardState(_) => (0, 0),
        };
        let unsealed = format::encode_frame(&mut self.buf, op.kind(), stream, index, term, payload);
        self.frames.push(BatchFrame {
            stream,
            op,
            unsealed,
            payload_len: payload.len() as u32,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Encoded bytes of the batch.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Entries in the batch.
    pub fn entry_count(&self) -> usize {
        self.frames
            .iter()
            .filter(|f| matches!(f.op, Op::Entry { .. }))
            .count()
    }
}
