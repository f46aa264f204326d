//! Framing: every frame is a 4-byte big-endian length followed by that many bytes of postcard.
//!
//! [`FrameReader`] and [`FrameWriter`] own the two halves of a connection and are generic over
//! `AsyncRead`/`AsyncWrite`, so tests run them over `tokio::io::duplex`. A length over
//! [`MAX_FRAME`] is refused before any allocation, and the buffer grows only as a frame's
//! bytes arrive; a clean EOF between frames is `Ok(None)`, an EOF inside a frame is an error.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};

/// Hard cap on one frame's body: a chunk (at most 1 MiB) plus headroom, and a manifest of a
/// file of up to about 200 GiB.
pub const MAX_FRAME: usize = 8 << 20;

/// What can go wrong reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads frames from one half of a connection.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
        }
    }

    /// The next frame, or `Ok(None)` on a clean end of stream.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let mut len_bytes = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            let n = self.inner.read(&mut len_bytes[got..]).await?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
            got += n;
        }
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        // The buffer grows as bytes arrive, not to what the length claims: a peer that
        // announces 8 MiB and sends nothing costs nothing.
        self.buf.clear();
        self.buf.reserve(len.min(64 << 10));
        (&mut self.inner)
            .take(len as u64)
            .read_to_end(&mut self.buf)
            .await?;
        if self.buf.len() < len {
            return Err(FrameError::Truncated);
        }
        let value = postcard::from_bytes(&self.buf)?;
        if self.buf.capacity() > (2 << 20) {
            // Do not keep a large buffer alive for an idle connection.
            self.buf = Vec::new();
        }
        Ok(Some(value))
    }
}

/// Writes frames to one half of a connection.
pub struct FrameWriter<W: AsyncWrite> {
    inner: BufWriter<W>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner: BufWriter::with_capacity(64 << 10, inner),
        }
    }

    /// Queues one frame; call [`FrameWriter::flush`] to send what is queued.
    pub async fn write<T: Serialize>(&mut self, value: &T) -> Result<(), FrameError> {
        // Sized first, so the frame is serialised once into a buffer of its exact size.
        let len = checked_len(value)?;
        let mut frame = Vec::with_capacity(4 + len);
        frame.extend_from_slice(&(len as u32).to_be_bytes());
        let frame = postcard::to_extend(value, frame)?;
        self.inner.write_all(&frame).await?;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), FrameError> {
        self.inner.flush().await?;
        Ok(())
    }

    /// Writes one frame and flushes.
    pub async fn send<T: Serialize>(&mut self, value: &T) -> Result<(), FrameError> {
        self.write(value).await?;
        self.flush().await
    }

    pub async fn shutdown(&mut self) -> Result<(), FrameError> {
        self.inner.shutdown().await?;
        Ok(())
    }
}

/// The length of one frame's body, refusing one over the cap (so a sender learns it, not the
/// peer). Counting does not copy the payload.
pub fn checked_len<T: Serialize>(value: &T) -> Result<usize, FrameError> {
    let len = postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(
        value,
        postcard::ser_flavors::Size::default(),
    )?;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Serialises one frame body, refusing one over the cap.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let len = checked_len(value)?;
    Ok(postcard::to_extend(value, Vec::with_capacity(len))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{ClientFrame, Request};

    #[tokio::test]
    async fn round_trip_over_duplex() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        let f = ClientFrame::Request {
            id: 7,
            body: Request::GetAttr { node: 42 },
        };
        w.send(&f).await.unwrap();
        drop(w);
        assert_eq!(r.read::<ClientFrame>().await.unwrap(), Some(f));
        assert!(r.read::<ClientFrame>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_length_is_refused_without_reading_body() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
            .await
            .unwrap();
        let mut r = FrameReader::new(b);
        assert!(matches!(
            r.read::<ClientFrame>().await,
            Err(FrameError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn eof_inside_frame_is_truncated() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(&[1, 2, 3]).await.unwrap();
        drop(a);
        let mut r = FrameReader::new(b);
        assert!(matches!(
            r.read::<ClientFrame>().await,
            Err(FrameError::Truncated)
        ));
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0, 0]).await.unwrap();
        drop(a);
        let mut r = FrameReader::new(b);
        assert!(matches!(
            r.read::<ClientFrame>().await,
            Err(FrameError::Truncated)
        ));
    }

    #[tokio::test]
    async fn a_large_announced_frame_costs_only_what_arrives() {
        let mut bytes = (MAX_FRAME as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[7; 10]);
        let mut r = FrameReader::new(bytes.as_slice());
        assert!(matches!(
            r.read::<ClientFrame>().await,
            Err(FrameError::Truncated)
        ));
        assert!(r.buf.capacity() <= 64 << 10, "{}", r.buf.capacity());
    }

    #[tokio::test]
    async fn garbage_body_is_malformed_not_a_panic() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&4u32.to_be_bytes()).await.unwrap();
        a.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
        let mut r = FrameReader::new(b);
        assert!(matches!(
            r.read::<ClientFrame>().await,
            Err(FrameError::Malformed(_))
        ));
    }
}
