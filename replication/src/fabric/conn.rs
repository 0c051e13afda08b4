//! One TCP connection as frames: reads through the total frame decoder into
//! a buffer that grows only after a header passed its checks, every read and
//! write under a deadline, errors naming the peer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::{Error, Result, WireError};
use crate::fabric::format::{FRAME_HEADER_BYTES, FRAME_TRAILER_BYTES};
use crate::fabric::frame::{self, FrameRef};

/// Bytes asked of the socket per read.
const READ_BYTES: usize = 64 << 10;

/// A frame read off a connection.
pub(crate) struct OwnedFrame {
    pub kind: u8,
    /// The whole frame; the payload sits between header and trailer.
    bytes: Bytes,
}

impl OwnedFrame {
    pub fn payload(&self) -> &[u8] {
        &self.bytes[FRAME_HEADER_BYTES..self.bytes.len() - FRAME_TRAILER_BYTES]
    }

    pub fn as_ref(&self) -> FrameRef<'_> {
        FrameRef {
            kind: self.kind,
            payload: self.payload(),
        }
    }
}

pub(crate) struct Conn {
    /// Who is at the other end, for errors and logs.
    pub peer: String,
    reader: OwnedReadHalf,
    buf: BytesMut,
    pub writer: OwnedWriteHalf,
}

fn timed_out(peer: &str, what: &'static str, timeout: Duration) -> Error {
    Error::NetTimeout {
        peer: peer.to_string(),
        what,
        timeout_ms: timeout.as_millis() as u64,
    }
}

impl Conn {
    pub fn new(stream: TcpStream, peer: String) -> Conn {
        // Raft messages are small and latency-bound; batching is done above.
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Conn {
            peer,
            reader,
            buf: BytesMut::new(),
            writer,
        }
    }

    fn wire(&self, source: WireError) -> Error {
        Error::Wire {
            peer: self.peer.clone(),
            source,
        }
    }

    /// The next frame of at most `max_payload_bytes`, waiting up to
    /// `timeout`; `None` if the peer closed between frames.
    pub async fn read_frame(
        &mut self,
        max_payload_bytes: usize,
        timeout: Duration,
    ) -> Result<Option<OwnedFrame>> {
        loop {
            match frame::decode(&self.buf, max_payload_bytes) {
                Ok(Some((found, used))) => {
                    let kind = found.kind;
                    let bytes = self.buf.split_to(used).freeze();
                    return Ok(Some(OwnedFrame { kind, bytes }));
                }
                Ok(None) => {}
                Err(e) => return Err(self.wire(e)),
            }
            self.buf.reserve(READ_BYTES);
            let read = tokio::time::timeout(timeout, self.reader.read_buf(&mut self.buf)).await;
            match read {
                Err(_) => return Err(timed_out(&self.peer, "reading a frame", timeout)),
                Ok(Err(source)) => {
                    return Err(Error::Net {
                        peer: self.peer.clone(),
                        what: "reading",
                        source,
                    });
                }
                Ok(Ok(0)) if self.buf.is_empty() => return Ok(None),
                Ok(Ok(0)) => return Err(self.wire(WireError::Truncated)),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Writes one whole frame within `timeout`.
    pub async fn write_frame(&mut self, kind: u8, payload: &[u8], timeout: Duration) -> Result<()> {
        let bytes = frame::encode(kind, payload).map_err(|e| self.wire(e))?;
        write_all(&mut self.writer, &self.peer, &[bytes], timeout).await
    }

    pub fn into_parts(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        (self.reader, self.writer)
    }
}

/// Writes `frames` back to back (buffered: many small frames go out in one
/// syscall) and flushes, all within `timeout`.
pub(crate) async fn write_all<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    peer: &str,
    frames: &[Vec<u8>],
    timeout: Duration,
) -> Result<()> {
    let write = async {
        let mut buffered = tokio::io::BufWriter::with_capacity(READ_BYTES * 4, &mut *writer);
        for frame in frames {
            buffered.write_all(frame).await?;
        }
        buffered.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Err(_) => Err(timed_out(peer, "writing", timeout)),
        Ok(Err(source)) => Err(Error::Net {
            peer: peer.to_string(),
            what: "writing",
            source,
        }),
        Ok(Ok(())) => Ok(()),
    }
}
