//! Sending file content to the server: chunk it (FastCDC + BLAKE3), ask which chunks the
//! server lacks and upload only those, or (small files) carry the chunks inside the commit.
//! Shared by the mount's uploader and by import/backup.

use crate::chunker;
use crate::core::FsError;
use crate::remote::calls::Awaited;
use crate::remote::Remote;
use crate::remote::RemoteError;
use shelf_protocol::{ChunkBody, ChunkId, ChunkRef, NodeId, MAX_CHUNKS_PER_REQUEST};
use std::collections::{HashSet, VecDeque};
use std::io::Read;

/// Chunk ids asked about per `HaveChunks`.
const HAVE_BATCH: usize = 64;
/// Chunk upload requests in flight at once.
const MAX_PUTS_IN_FLIGHT: usize = 8;
/// Bytes of chunk bodies per upload request.
const PUT_BATCH_BYTES: usize = 1 << 20;
/// Files up to this size send their chunks inside the commit (at most a few chunks).
pub const INLINE_MAX: u64 = 256 << 10;

/// Chunks a small file for a commit that carries its chunks (the server deduplicates).
pub fn inline_chunks(reader: impl Read) -> std::io::Result<(Vec<ChunkRef>, Vec<ChunkBody>)> {
    let mut refs = Vec::new();
    let mut bodies = Vec::new();
    chunker::chunk_stream(reader, |r, data| {
        refs.push(r);
        bodies.push(ChunkBody { id: r.id, data });
        Ok(())
    })?;
    Ok((refs, bodies))
}

/// Chunks a stream and uploads every chunk the server lacks. Returns the chunk list.
///
/// Pipelined: while the server answers which chunks of one batch it lacks, the next batch
/// is being chunked and hashed; chunk uploads are sent without waiting, up to
/// [`MAX_PUTS_IN_FLIGHT`] at once.
/// Chunks in `known` (those of the version the content is based on) are not asked
/// about: the server holds them, so an edit in a large file costs a few ids, not all.
pub fn send_chunks(
    remote: &Remote,
    node: NodeId,
    reader: impl Read,
    known: &HashSet<ChunkId>,
) -> Result<Vec<ChunkRef>, FsError> {
    type Batch = Vec<(ChunkRef, Vec<u8>)>;
    let mut refs = Vec::new();
    let mut batch: Batch = Vec::new();
    let mut asked: Option<(Batch, Awaited<Vec<u32>>)> = None;
    let mut puts: VecDeque<Awaited<()>> = VecDeque::new();
    // Uploads the chunks of an answered batch that the server lacks.
    let send_missing = |(mut batch, ticket): (Batch, Awaited<Vec<u32>>),
                        puts: &mut VecDeque<Awaited<()>>|
     -> Result<(), FsError> {
        let missing = ticket.wait()?;
        let mut seen = HashSet::new();
        let mut group: Vec<ChunkBody> = Vec::new();
        let mut group_bytes = 0;
        let send = |group: Vec<ChunkBody>, puts: &mut VecDeque<Awaited<()>>| {
            while puts.len() >= MAX_PUTS_IN_FLIGHT {
                if let Some(t) = puts.pop_front() {
                    t.wait()?;
                }
            }
            puts.push_back(remote.submit_put_chunks(node, group));
            Ok::<_, FsError>(())
        };
        for i in missing {
            let Some((r, data)) = batch.get_mut(i as usize) else {
                return Err(RemoteError::Protocol(format!(
                    "have-chunks: index {i} of {} chunks",
                    batch.len()
                ))
                .into());
            };
            if !seen.insert(r.id) {
                continue; // the same chunk twice in one batch
            }
            group_bytes += data.len();
            group.push(ChunkBody {
                id: r.id,
                data: std::mem::take(data),
            });
            if group.len() >= MAX_CHUNKS_PER_REQUEST || group_bytes >= PUT_BATCH_BYTES {
                send(std::mem::take(&mut group), puts)?;
                group_bytes = 0;
            }
        }
        if !group.is_empty() {
            send(group, puts)?;
        }
        Ok(())
    };
    let ask = |batch: Batch,
               asked: &mut Option<(Batch, Awaited<Vec<u32>>)>,
               puts: &mut VecDeque<Awaited<()>>|
     -> Result<(), FsError> {
        let ids = batch.iter().map(|(r, _)| r.id).collect();
        let ticket = remote.submit_have_chunks(node, ids);
        if let Some(prev) = asked.replace((batch, ticket)) {
            send_missing(prev, puts)?;
        }
        Ok(())
    };
    let mut err = None;
    chunker::chunk_stream(reader, |r, data| {
        refs.push(r);
        if known.contains(&r.id) {
            return Ok(());
        }
        batch.push((r, data));
        if batch.len() >= HAVE_BATCH {
            if let Err(e) = ask(std::mem::take(&mut batch), &mut asked, &mut puts) {
                err = Some(e);
                return Err(std::io::Error::other("upload failed"));
            }
        }
        Ok(())
    })
    .or_else(|e| if err.is_some() { Ok(()) } else { Err(e) })?;
    if let Some(e) = err {
        return Err(e);
    }
    if !batch.is_empty() {
        ask(batch, &mut asked, &mut puts)?;
    }
    if let Some(last) = asked.take() {
        send_missing(last, &mut puts)?;
    }
    for t in puts {
        t.wait()?;
    }
    Ok(refs)
}
