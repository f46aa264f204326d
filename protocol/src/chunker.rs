//! Content-defined chunking: FastCDC cuts a file where its content says (so an insert shifts
//! only nearby cut points, like LBFS and rsync), and each chunk is named by its BLAKE3 hash.
//! Average 64 KiB, min 16 KiB, max 256 KiB: a small edit in a large file re-sends about one
//! chunk.

use crate::{ChunkId, ChunkRef};
use std::io::Read;

pub const MIN_CHUNK: u32 = 16 << 10;
pub const AVG_CHUNK: u32 = 64 << 10;
pub const MAX_CHUNK: u32 = 256 << 10;

pub fn chunk_id(data: &[u8]) -> ChunkId {
    ChunkId(*blake3::hash(data).as_bytes())
}

/// Bytes read at a time: chunking runs over this buffer in place (no per-chunk shifting).
const READ_BUF: usize = 8 << 20;

/// Splits a stream into chunks, calling `each` with every chunk's ref and bytes in order.
pub fn chunk_stream<R: Read>(
    reader: R,
    each: impl FnMut(ChunkRef, Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    chunk_stream_buffered(reader, READ_BUF, each)
}

/// [`chunk_stream`] with a given buffer size (at least [`MAX_CHUNK`]).
fn chunk_stream_buffered<R: Read>(
    mut reader: R,
    buf_len: usize,
    mut each: impl FnMut(ChunkRef, Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut chunker = Chunker::with_buffer(buf_len);
    let mut piece = vec![0u8; buf_len.clamp(64 << 10, 1 << 20)];
    loop {
        let n = match reader.read(&mut piece) {
            Ok(0) => return chunker.finish(&mut each),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        chunker.push(&piece[..n], &mut each)?;
    }
}

/// Chunking of a stream that arrives in pieces (a web upload's requests): the cut points
/// are those of chunking the whole stream at once. Bytes wait in a buffer until it holds
/// `cap` of them; a chunk that ends at the buffer's end may have been cut short, so it
/// waits for more data behind it (or for [`Chunker::finish`]).
pub struct Chunker {
    buf: Vec<u8>,
    cap: usize,
}

impl Default for Chunker {
    fn default() -> Chunker {
        Chunker::with_buffer(READ_BUF)
    }
}

impl Chunker {
    /// A chunker that works once `cap` bytes (at least [`MAX_CHUNK`]) are waiting.
    pub fn with_buffer(cap: usize) -> Chunker {
        Chunker {
            buf: Vec::new(),
            cap: cap.max(MAX_CHUNK as usize),
        }
    }

    /// Bytes received but not yet in a chunk.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Adds bytes; calls `each` for every chunk they complete, in order.
    pub fn push<E>(
        &mut self,
        mut data: &[u8],
        each: &mut impl FnMut(ChunkRef, Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        while !data.is_empty() {
            let take = (self.cap - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() >= self.cap {
                self.cut(false, each)?;
            }
        }
        Ok(())
    }

    /// The end of the stream: every byte left goes out in chunks.
    pub fn finish<E>(
        mut self,
        each: &mut impl FnMut(ChunkRef, Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.cut(true, each)
    }

    fn cut<E>(
        &mut self,
        eof: bool,
        each: &mut impl FnMut(ChunkRef, Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let end = self.buf.len();
        let mut done = 0;
        for c in fastcdc::v2020::FastCDC::new(&self.buf, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK) {
            if !eof && c.offset + c.length == end {
                break;
            }
            let body = self.buf[c.offset..c.offset + c.length].to_vec();
            let r = ChunkRef {
                id: chunk_id(&body),
                len: c.length as u32,
            };
            each(r, body)?;
            done = c.offset + c.length;
        }
        self.buf.drain(..done);
        Ok(())
    }
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

    /// Pieces of any size pushed into a [`Chunker`] give whole-stream chunking's cuts.
    #[test]
    fn pushed_pieces_chunk_as_the_whole_stream() {
        let mut x: u64 = 7;
        let data: Vec<u8> = (0..5_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let whole = refs(&data);
        for piece in [1000usize, 65_536, 3 << 20, 8 << 20] {
            let mut chunker = Chunker::with_buffer(1 << 20);
            let mut got = Vec::new();
            let mut each = |r: ChunkRef, body: Vec<u8>| {
                assert_eq!(chunk_id(&body), r.id);
                got.push(r);
                Ok::<(), ()>(())
            };
            for p in data.chunks(piece) {
                chunker.push(p, &mut each).unwrap();
            }
            chunker.finish(&mut each).unwrap();
            assert_eq!(got, whole, "pieces of {piece}");
        }
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

    /// The buffered chunker cuts exactly where chunking the whole stream at once does,
    /// whatever the buffer size and however the reader splits its reads.
    #[test]
    fn buffered_chunking_matches_whole_stream_chunking() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 24,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let strategy = (
            0usize..3_000_000,
            any::<u64>(),
            256usize..1024,
            1usize..70_000,
        );
        runner
            .run(&strategy, |(len, seed, buf_kib, read_max)| {
                let mut x = seed | 1;
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Runs of zeros too, so some chunks end at the maximum size.
                        if (x >> 40) % 5 == 0 {
                            0
                        } else {
                            x as u8
                        }
                    })
                    .collect();
                let whole: Vec<(usize, usize)> =
                    fastcdc::v2020::FastCDC::new(&data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
                        .map(|c| (c.offset, c.length))
                        .collect();
                struct Trickle<'a>(&'a [u8], usize);
                impl Read for Trickle<'_> {
                    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                        let n = buf.len().min(self.1).min(self.0.len());
                        buf[..n].copy_from_slice(&self.0[..n]);
                        self.0 = &self.0[n..];
                        Ok(n)
                    }
                }
                let mut got = Vec::new();
                let mut at = 0;
                chunk_stream_buffered(Trickle(&data, read_max), buf_kib << 10, |r, body| {
                    assert_eq!(r.id, chunk_id(&data[at..at + body.len()]));
                    got.push((at, body.len()));
                    at += body.len();
                    Ok(())
                })
                .unwrap();
                prop_assert_eq!(got, whole);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(refs(&[]).is_empty());
    }
}
