//! The Aerospike service port: one task per connection reading frames
//! (bounded by the max message size), answering them in order (pipelined
//! requests included), closing idle and slow connections, and refusing
//! connections past the limit.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aerie_protocol::{FrameDecoder, FrameStatus, ResultCode, encode_error_response};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::handler::{ConnState, Server};

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Capacity a connection's buffers keep between messages: the share it may
/// hold without reserving from the service's budget.
const KEEP_BUFFER_BYTES: usize = super::budget::FREE_PER_CONNECTION_BYTES;

/// Accepts connections until `shutdown` turns true; returns once every
/// connection has finished its request in flight.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Server>,
    max_connections: usize,
    idle_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                if open.load(Ordering::SeqCst) >= max_connections {
                    tracing::warn!(%peer, max_connections, "connection refused: too many");
                    continue;
                }
                open.fetch_add(1, Ordering::SeqCst);
                let (server, open, shutdown) = (server.clone(), open.clone(), shutdown.clone());
                tasks.spawn(async move {
                    if let Err(e) = connection(stream, &server, idle_timeout, shutdown).await {
                        tracing::debug!(%peer, error = %e, "connection closed");
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

/// Serves one connection: frames in, answers out, in order.
///
/// Time bounds: between messages the client may stay silent for
/// `idle_timeout`; once a message's first byte has arrived the whole
/// message must arrive within `idle_timeout` of it (a sender trickling bytes
/// cannot hold the slot); every answer must be taken by the client within
/// `idle_timeout`. Memory: the read buffer holds at most one message (at
/// most `max_message_bytes`) plus one read, the answer buffer one answer
/// (streams are sent in frames of 256 KiB); both shrink back once a large
/// message is done.
async fn connection(
    stream: TcpStream,
    server: &Server,
    idle_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let mut writer = BufWriter::new(writer);
    let decoder = FrameDecoder::new(server.limits);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut held = server.budget.holder();
    let mut out = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut conn = ConnState::default();
    // When the first byte of the oldest message not yet answered arrived.
    let mut message_started: Option<Instant> = None;
    let mut last_read = Instant::now();
    loop {
        let consumed = match answer_buffered(
            &decoder,
            &buf,
            server,
            &mut conn,
            &mut out,
            &mut writer,
            idle_timeout,
        )
        .await?
        {
            Some(consumed) => consumed,
            None => return Ok(()),
        };
        buf.drain(..consumed);
        within(idle_timeout, writer.flush()).await?;
        // What is left is the start of a message that began in the last read.
        message_started = match (buf.is_empty(), consumed) {
            (true, _) => None,
            (false, 0) => message_started,
            (false, _) => Some(last_read),
        };
        give_back(&mut buf);
        give_back(&mut out);
        held.release_to(buf.capacity());
        if *shutdown.borrow() {
            return Ok(());
        }
        let until = message_started.unwrap_or_else(Instant::now) + idle_timeout;
        let start = buf.len();
        let needed = message_bytes(&decoder, &buf).max(start + READ_CHUNK_BYTES);
        if held.cover(needed, until).await.is_err() {
            tracing::warn!(
                needed_bytes = needed,
                "a large message does not fit the service's memory budget in time: connection closed"
            );
            return Ok(());
        }
        buf.reserve_exact(needed - start);
        // `read_buf` reads into the spare capacity: nothing is zeroed first
        // (zeroing 64 KiB before every read cost 6 % of a node's CPU).
        let read = tokio::select! {
            read = tokio::time::timeout_at(until.into(), reader.read_buf(&mut buf)) => read,
            _ = shutdown.changed() => return Ok(()),
        };
        match read {
            Ok(Ok(0)) | Err(_) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
        last_read = Instant::now();
        message_started.get_or_insert(last_read);
    }
}

/// The size of the message `buf` holds the start of (0 before its header).
fn message_bytes(decoder: &FrameDecoder, buf: &[u8]) -> usize {
    match decoder.decode(buf) {
        Ok(FrameStatus::Incomplete { needed_bytes }) => needed_bytes,
        _ => 0,
    }
}

/// Answers every whole frame at the start of `buf` (pipelining), in order;
/// returns the bytes they took, or `None` after answering a bad header
/// (nothing after it can be framed: the connection closes).
async fn answer_buffered<W: AsyncWrite + Unpin>(
    decoder: &FrameDecoder,
    buf: &[u8],
    server: &Server,
    conn: &mut ConnState,
    out: &mut Vec<u8>,
    writer: &mut W,
    idle_timeout: Duration,
) -> std::io::Result<Option<usize>> {
    let mut consumed = 0;
    loop {
        match decoder.decode(&buf[consumed..]) {
            Ok(FrameStatus::Complete {
                frame,
                consumed_bytes,
            }) => {
                server.handle(frame, conn, out, writer).await?;
                within(idle_timeout, writer.write_all(out)).await?;
                out.clear();
                consumed += consumed_bytes;
            }
            Ok(FrameStatus::Incomplete { .. }) => return Ok(Some(consumed)),
            Err(e) => {
                tracing::debug!(error = %e, "malformed frame");
                let code = match e.result_code() {
                    ResultCode::Ok => ResultCode::Parameter,
                    code => code,
                };
                let _ = encode_error_response(out, code);
                within(idle_timeout, writer.write_all(out)).await?;
                within(idle_timeout, writer.flush()).await?;
                return Ok(None);
            }
        }
    }
}

/// A socket write the client must take within `limit`.
async fn within<T>(
    limit: Duration,
    io: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(limit, io)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Returns what a large message made a buffer grow by, once it holds
/// little (never while a large message is arriving: it would be copied
/// again at every read).
fn give_back(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_BUFFER_BYTES && buf.len() <= KEEP_BUFFER_BYTES / 2 {
        buf.shrink_to(KEEP_BUFFER_BYTES);
    }
}
