//! Installing a snapshot into an engine: verify the whole file first, stage
//! every namespace's records, then commit them all at once.

use std::cell::RefCell;

use aerie_engine::{Engine, Install};

use crate::error::{Error, Result};
use std::sync::mpsc::{Receiver, sync_channel};

use crate::reader::{Chunk, SnapshotReader, VerifyReport};

/// Installs `reader`'s records into `engine`, replacing the snapshot's
/// partitions in every namespace; the engine's applied (and, once this returns,
/// durable) index of the snapshot's log becomes the snapshot's index. Returns
/// the records installed.
///
/// The file is verified in full before anything is touched. The install is
/// one engine commit ([`Engine::begin_install`]): should anything fail before
/// it (a chunk failing on the second pass because the file changed
/// underneath, a full disk), the engine keeps its previous state and applied
/// index; after a crash at any point it reopens with either the old or the
/// new contents of every namespace, never a mix.
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
    let names: Vec<&str> = header.namespaces.iter().map(|n| n.name.as_str()).collect();
    let mut install =
        engine.begin_install(&names, &header.partitions, header.log_id, header.index)?;
    let progress = RefCell::new(progress);
    let mut installed = 0u64;
    for (position, ns) in header.namespaces.iter().enumerate() {
        stage_namespace(&mut install, reader, (position, &ns.name), |n| {
            installed += n;
            (progress.borrow_mut())(installed);
        })?;
    }
    let committed = install.commit()?;
    (progress.borrow_mut())(committed);
    Ok(committed)
}

/// Stages the records of the namespace at `position` in the header, decoded
/// on a helper thread; `progress` gets every 4096 records staged. A chunk
/// that fails to read spoils the install (the caller drops it).
fn stage_namespace(
    install: &mut Install<'_>,
    reader: &SnapshotReader,
    (position, name): (usize, &str),
    mut progress: impl FnMut(u64),
) -> Result<()> {
    let failure = RefCell::new(None);
    let mut staged = 0u64;
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
                staged += 1;
                if staged.is_multiple_of(4096) {
                    progress(4096);
                }
            });
        install.stage(name, records)?;
        Ok(())
    })?;
    failure.into_inner().map_or(Ok(()), Err)
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
