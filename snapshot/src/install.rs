//! Installing a snapshot into an engine: verify the whole file first, then
//! replace the shard's partitions namespace by namespace.

use std::cell::RefCell;

use aerie_engine::Engine;

use crate::error::{Error, Result};
use std::sync::mpsc::{Receiver, sync_channel};

use crate::reader::{Chunk, SnapshotReader, VerifyReport};

/// Installs `reader`'s records into `engine`, replacing the snapshot's
/// partitions in every namespace; the engine's applied (and, once this returns,
/// durable) index of the snapshot's log becomes the snapshot's index. Returns
/// the records installed.
///
/// The file is verified in full before anything is touched. Should a chunk
/// fail on the second pass (the file changed underneath), the partitions are
/// emptied and the log's applied index reset to 0, so the shard asks for a
/// snapshot again instead of serving half of one.
pub fn install(engine: &Engine, reader: &SnapshotReader, progress: impl FnMut(u64)) -> Result<u64> {
    let report = reader.verify(|_| {})?;
    install_verified(engine, reader, &report, progress)
}

/// [`install`] for a file whose full verification the caller already holds
/// (from [`SnapshotReader::verify`] or a transfer's `Receiver::finish`), so
/// the file is not read one more time.
pub fn install_verified(
    engine: &Engine,
    reader: &SnapshotReader,
    report: &VerifyReport,
    progress: impl FnMut(u64),
) -> Result<u64> {
    if report.path != reader.path() || report.footer != *reader.footer() {
        return Err(Error::Invalid(format!(
            "{}: the verify report is of another file",
            reader.path().display()
        )));
    }
    let header = reader.header();
    for ns in &header.namespaces {
        if !engine.config().namespaces.iter().any(|n| n.name == ns.name) {
            return Err(Error::Refused(format!(
                "{}: namespace {} is not configured in this engine",
                reader.path().display(),
                ns.name
            )));
        }
    }
    let progress = RefCell::new(progress);
    let mut installed = 0u64;
    for (position, ns) in header.namespaces.iter().enumerate() {
        let failure = RefCell::new(None);
        std::thread::scope(|scope| -> Result<()> {
            let chunks = prefetch(scope, reader, position as u16);
            let records = chunks
                .into_iter()
                .map_while(|chunk| match chunk {
                    Ok(chunk) => Some(chunk.records),
                    Err(e) => {
                        *failure.borrow_mut() = Some(e);
                        None
                    }
                })
                .flatten()
                .inspect(|_| {
                    installed += 1;
                    if installed.is_multiple_of(4096) {
                        (progress.borrow_mut())(installed);
                    }
                });
            engine.install(
                &ns.name,
                &header.partitions,
                records,
                header.log_id,
                header.index,
            )?;
            Ok(())
        })?;
        if let Some(e) = failure.into_inner() {
            reset(engine, reader)?;
            return Err(e);
        }
    }
    (progress.borrow_mut())(installed);
    Ok(installed)
}

/// Chunks decoded ahead.
const PREFETCH_CHUNKS: usize = 2;

/// Reads and decodes the chunks of one namespace on a helper thread, so
/// decompression overlaps the engine's writes (memory: a few chunks).
fn prefetch<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    reader: &'scope SnapshotReader,
    namespace: u16,
) -> Receiver<Result<Chunk>> {
    let (sender, receiver) = sync_channel(PREFETCH_CHUNKS);
    scope.spawn(move || {
        for i in 0..reader.chunk_count() {
            let chunk = match reader.chunk_header(i) {
                Ok(h) if h.namespace != namespace => continue,
                Ok(_) => reader.chunk(i),
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if sender.send(chunk).is_err() || failed {
                return;
            }
        }
    });
    receiver
}

fn reset(engine: &Engine, reader: &SnapshotReader) -> Result<()> {
    let header = reader.header();
    for ns in &header.namespaces {
        engine.install(
            &ns.name,
            &header.partitions,
            std::iter::empty(),
            header.log_id,
            0,
        )?;
    }
    Ok(())
}
