//! Content-defined chunking: FastCDC cuts a file where its content says (so an insert shifts
//! only nearby cut points, like LBFS and rsync), and each chunk is named by its BLAKE3 hash.
//! Average 64 KiB, min 16 KiB, max 256 KiB: a small edit in a large file re-sends about one
//! chunk.

use shelf_protocol::{ChunkId, ChunkRef};
use std::io::Read;

pub const MIN_CHUNK: u32 = 16 << 10;
pub const AVG_CHUNK: u32 = 64 << 10;
pub const MAX_CHUNK: u32 = 256 << 10;

pub fn chunk_id(data: &[u8]) -> ChunkId {
    ChunkId(*blake3::hash(data).as_bytes())
}

/// Splits a stream into chunks, calling `each` with every chunk's ref and bytes in order.
pub fn chunk_stream<R: Read>(
    reader: R,
    mut each: impl FnMut(ChunkRef, Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let cdc = fastcdc::v2020::StreamCDC::new(reader, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK);
    for chunk in cdc {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => io,
            other => std::io::Error::other(other.to_string()),
        })?;
        let r = ChunkRef {
            id: chunk_id(&chunk.data),
            len: chunk.length as u32,
        };
        each(r, chunk.data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(data: &[u8]) -> Vec<ChunkRef> {
        let mut out = Vec::new();
        chunk_stream(data, |r, _| {
            out.push(r);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn small_edit_changes_few_chunks() {
        let mut data = vec![0u8; 8 << 20];
        let mut x: u64 = 1;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let before = refs(&data);
        assert_eq!(
            before.iter().map(|r| r.len as usize).sum::<usize>(),
            data.len()
        );
        data.splice(4 << 20..4 << 20, b"inserted bytes".iter().copied());
        let after = refs(&data);
        let old: std::collections::HashSet<_> = before.iter().map(|r| r.id).collect();
        let new_chunks = after.iter().filter(|r| !old.contains(&r.id)).count();
        assert!(new_chunks <= 2, "{new_chunks} chunks changed");
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(refs(&[]).is_empty());
    }
}
