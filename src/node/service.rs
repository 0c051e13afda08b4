//! The Aerospike service port: one task per connection reading frames
//! (bounded by the max message size), answering them in order (pipelined
//! requests included), closing idle connections, and refusing connections
//! past the limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aerie_protocol::{FrameDecoder, FrameStatus, ResultCode, encode_error_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::handler::Server;

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 << 10;

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
    let mut out = Vec::with_capacity(READ_CHUNK_BYTES);
    loop {
        // Answer every whole frame already buffered (pipelining), in order.
        let mut consumed = 0;
        loop {
            match decoder.decode(&buf[consumed..]) {
                Ok(FrameStatus::Complete {
                    frame,
                    consumed_bytes,
                }) => {
                    server.handle(frame, &mut out, &mut writer).await?;
                    writer.write_all(&out).await?;
                    out.clear();
                    consumed += consumed_bytes;
                }
                Ok(FrameStatus::Incomplete { .. }) => break,
                Err(e) => {
                    // A bad header: nothing after it can be framed. Answer
                    // and close.
                    let code = e.result_code();
                    tracing::debug!(error = %e, "malformed frame");
                    let _ = encode_error_response(
                        &mut out,
                        if code == ResultCode::Ok {
                            ResultCode::Parameter
                        } else {
                            code
                        },
                    );
                    writer.write_all(&out).await?;
                    writer.flush().await?;
                    return Ok(());
                }
            }
        }
        buf.drain(..consumed);
        writer.flush().await?;
        if *shutdown.borrow() {
            return Ok(());
        }
        let start = buf.len();
        buf.resize(start + READ_CHUNK_BYTES, 0);
        let read = tokio::select! {
            read = tokio::time::timeout(idle_timeout, reader.read(&mut buf[start..])) => read,
            _ = shutdown.changed() => return Ok(()),
        };
        match read {
            Ok(Ok(0)) | Err(_) => return Ok(()),
            Ok(Ok(n)) => buf.truncate(start + n),
            Ok(Err(e)) => return Err(e),
        }
    }
}
