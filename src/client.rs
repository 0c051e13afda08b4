//! A lean Aerospike-protocol client over one TCP connection, built on the
//! protocol crate's codec: what `aerie info`, `aerie bench` and
//! `aerie snapshot create --host` use, so they measure the server, not a
//! client library.

use std::io;

use aerie_protocol::framing::MessageType;
use aerie_protocol::info::{self, InfoRequest};
use aerie_protocol::{FrameDecoder, FrameStatus, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// One connection.
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    decoder: FrameDecoder,
}

impl Connection {
    /// Connects to `address` (`host:port`).
    pub async fn connect(address: &str) -> io::Result<Connection> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(64 << 10),
            decoder: FrameDecoder::new(Limits::default()),
        })
    }

    /// Whether the peer has not closed this idle connection (nor sent
    /// anything unasked): checked without waiting.
    pub fn looks_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(
            self.stream.try_read(&mut probe),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        ) && self.buf.is_empty()
    }

    /// Sends encoded frames.
    pub async fn send(&mut self, frames: &[u8]) -> io::Result<()> {
        self.stream.write_all(frames).await
    }

    /// Reads the next whole frame: its type and body.
    pub async fn read_frame(&mut self) -> io::Result<(MessageType, Vec<u8>)> {
        loop {
            if let FrameStatus::Complete {
                frame,
                consumed_bytes,
            } = self.decoder.decode(&self.buf).map_err(invalid)?
            {
                let out = (frame.header.msg_type, frame.body.to_vec());
                self.buf.drain(..consumed_bytes);
                return Ok(out);
            }
            let start = self.buf.len();
            self.buf.resize(start + (64 << 10), 0);
            let n = self.stream.read(&mut self.buf[start..]).await?;
            self.buf.truncate(start + n);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
        }
    }

    /// Asks info `names`; returns (name, value) pairs in answer order.
    pub async fn info(&mut self, names: &[&str]) -> io::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        InfoRequest::encode_frame(&mut out, names).map_err(invalid)?;
        self.send(&out).await?;
        let (_, body) = self.read_frame().await?;
        let pairs = info::parse_response(&body).map_err(invalid)?;
        Ok(pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }
}
