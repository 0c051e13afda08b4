//! Replica rebuild: a follower told by raft to install a snapshot fetches the
//! file from the node named in the snapshot message, chunk by chunk (resumable
//! at the offset its partial file reached), verifies it in full, installs it
//! into the engine, and only then lets raft go on. The other side serves
//! chunks of its snapshot files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use aerie_engine::Engine;
use aerie_snapshot::transfer::{ChunkSource, Receiver as FileReceiver};
use aerie_snapshot::{SnapshotReader, VerifyReport, format};

use crate::codec::SnapshotRef;
use crate::error::{Error, Result};
use crate::rebuild::{Pace, Rebuilds};
use crate::transport::{Envelope, Transport};

/// Bytes asked for per chunk.
pub const CHUNK_BYTES: usize = 2 << 20;
/// How long a chunk may take before it is asked for again.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(2);
/// Chunk requests without progress before the fetch gives up (raft will ask
/// again).
const MAX_CHUNK_RETRIES: usize = 10;

/// Serves a chunk of a snapshot file in `dir` to `request`'s sender.
pub fn serve_chunk(dir: &Path, me: u64, transport: &dyn Transport, request: Envelope) {
    let Envelope::ChunkRequest {
        from,
        shard,
        file_name,
        offset,
    } = request
    else {
        return;
    };
    let bytes = if format::parse_file_name(&file_name).is_none() {
        Err(format!("{file_name:?} is not a snapshot file name"))
    } else {
        ChunkSource::open(&dir.join(&file_name))
            .and_then(|source| source.read(offset, CHUNK_BYTES))
            .map_err(|e| e.to_string())
    };
    let reply = Envelope::Chunk {
        shard,
        file_name,
        offset,
        bytes,
    };
    // Not queued: the fetch asks again after its chunk timeout.
    let _ = transport.send(me, from, reply);
}

/// What a fetch needs.
pub struct Fetch {
    pub me: u64,
    pub shard: u32,
    pub reference: SnapshotRef,
    pub dir: PathBuf,
    pub transport: Arc<dyn Transport>,
    /// Chunks addressed to this shard's install arrive here.
    pub chunks: Receiver<Envelope>,
    /// Where the progress is reported.
    pub rebuilds: Arc<Rebuilds>,
    /// The fetch's pace (0 = no limit).
    pub rate_bytes_per_sec: u64,
}

impl Fetch {
    /// Fetches the file into `dir`; returns its full verification.
    pub fn run(&self) -> Result<VerifyReport> {
        let name = &self.reference.file_name;
        let mut receiver = FileReceiver::open(&self.dir, name)?;
        let to_fetch = self.reference.file_bytes.saturating_sub(receiver.offset());
        self.rebuilds.start(self.shard, to_fetch);
        let mut pace = Pace::new(self.rate_bytes_per_sec);
        let mut logged = Instant::now();
        let mut retries = 0;
        loop {
            let offset = receiver.offset();
            // Not queued: the wait below times out and the request is sent
            // again, counted as a retry.
            let _ = self.transport.send(
                self.me,
                self.reference.node_id,
                Envelope::ChunkRequest {
                    from: self.me,
                    shard: self.shard,
                    file_name: name.clone(),
                    offset,
                },
            );
            match self.wait_chunk(offset)? {
                Some(bytes) if bytes.is_empty() => break,
                Some(bytes) => {
                    receiver.write(offset, &bytes)?;
                    retries = 0;
                    self.rebuilds.fetched(self.shard, bytes.len() as u64);
                    self.rebuilds.log_progress(self.shard, &mut logged);
                    std::thread::sleep(pace.after(bytes.len() as u64));
                }
                None if retries < MAX_CHUNK_RETRIES => retries += 1,
                None => {
                    return Err(Error::Timeout(self.shard));
                }
            }
        }
        Ok(receiver.finish()?)
    }

    /// The bytes at `offset`, `None` on a timeout. Stale answers are skipped.
    fn wait_chunk(&self, offset: u64) -> Result<Option<Vec<u8>>> {
        loop {
            match self.chunks.recv_timeout(CHUNK_TIMEOUT) {
                Ok(Envelope::Chunk {
                    offset: at,
                    bytes,
                    file_name,
                    ..
                }) if at == offset && file_name == self.reference.file_name => {
                    return bytes.map(Some).map_err(|reason| {
                        Error::Config(format!("snapshot source refused: {reason}"))
                    });
                }
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => return Err(Error::Stopped),
            }
        }
    }
}

/// Installs a fetched (and so fully verified) snapshot file into the engine.
pub fn install_file(engine: &Engine, verified: &VerifyReport) -> Result<u64> {
    let reader = SnapshotReader::open(&verified.path)?;
    Ok(aerie_snapshot::install_verified(
        engine,
        &reader,
        verified,
        |_| {},
    )?)
}
