//! A WebDAV `PUT` as a pipeline of three stages, so an upload uses more than one core: the
//! connection's task reads and decrypts the body, a worker thread cuts what came before
//! into chunks and hashes them ([`super::upload::cut`]), and a second one stores the chunks
//! (checked, sealed, written: [`super::upload::store_chunks`]), a megabyte at a time with
//! a few megabytes in flight. Only
//! the end of the body commits the new version ([`super::upload::commit`]); a body cut off
//! part way commits nothing (its chunks go with the next prune).

use super::dav::Creds;
use super::upload::{commit, cut, cut_rest, store_chunks, Upload};
use super::{Web, WebError};
use axum::body::Bytes;
use dav_server::fs::FsError;
use shelf_protocol::{Attr, ChunkBody, ErrorCode};
use std::sync::Weak;
use tokio::sync::mpsc;

/// Bytes gathered before they go to the worker.
const PIECE: usize = 1 << 20;
/// Pieces waiting for the worker at most (the connection waits beyond that).
const IN_FLIGHT: usize = 4;
/// Pieces' chunks cut and waiting to be stored at most.
const BATCHES: usize = 2;

enum Message {
    /// Body frames as they came (no copy), a megabyte or more of them.
    Piece(Vec<Bytes>),
    /// The body ended: commit.
    Finish,
}

/// The worker of one upload: where pieces go, and what it answers at the end.
struct Worker {
    to: mpsc::Sender<Message>,
    done: tokio::task::JoinHandle<Result<(), WebError>>,
}

/// The worker: this thread cuts pieces into chunks while a second one stores them; at
/// [`Message::Finish`], with every chunk stored, the commit.
fn pipeline(
    web: &Web,
    session: &Creds,
    upload: &mut Upload,
    from: &mut mpsc::Receiver<Message>,
) -> Result<(), WebError> {
    let scope = upload.scope();
    let (ended, stored) = std::thread::scope(|s| {
        let (to_store, batches) = std::sync::mpsc::sync_channel::<Vec<ChunkBody>>(BATCHES);
        let storer = s.spawn(move || {
            for batch in batches {
                store_chunks(web, session, scope, batch)?;
            }
            Ok::<(), WebError>(())
        });
        let ended = (|| {
            while let Some(message) = from.blocking_recv() {
                let (batch, end) = match message {
                    Message::Piece(frames) => {
                        let mut batch = Vec::new();
                        for frame in frames {
                            batch.extend(cut(upload, &frame)?);
                        }
                        (batch, false)
                    }
                    Message::Finish => (cut_rest(upload)?, true),
                };
                // A storer that stopped has its error to tell.
                if to_store.send(batch).is_err() || end {
                    return Ok(end);
                }
            }
            Ok::<bool, WebError>(false)
        })();
        drop(to_store);
        let stored = storer
            .join()
            .unwrap_or(Err(WebError::from(ErrorCode::Internal)));
        (ended, stored)
    });
    stored?;
    match ended? {
        true => commit(web, session, upload).map(|_| ()),
        // Cut off: nothing is committed.
        false => Err(WebError::from(ErrorCode::InvalidArgument)),
    }
}

/// A file being written over WebDAV.
pub struct Writer {
    web: Weak<Web>,
    session: Creds,
    upload: Option<Upload>,
    worker: Option<Worker>,
    /// Frames not yet sent to the worker, and their length.
    gathered: Vec<Bytes>,
    gathered_len: usize,
    received: u64,
    attr: Attr,
    finished: bool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Writer(at {})", self.received)
    }
}

impl Writer {
    pub fn new(web: Weak<Web>, session: Creds, upload: Upload, attr: Attr) -> Writer {
        Writer {
            web,
            session,
            upload: Some(upload),
            worker: None,
            gathered: Vec::new(),
            gathered_len: 0,
            received: 0,
            attr,
            finished: false,
        }
    }

    /// Bytes written so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// What the file looks like so far.
    pub fn attr(&self) -> Attr {
        let mut a = self.attr.clone();
        a.size = self.received;
        a
    }

    /// The worker, started on the first piece.
    fn worker(&mut self) -> Result<&mut Worker, FsError> {
        if self.worker.is_none() {
            let (Some(web), Some(mut upload)) = (self.web.upgrade(), self.upload.take()) else {
                return Err(FsError::GeneralFailure);
            };
            let session = self.session.clone();
            let (to, mut from) = mpsc::channel(IN_FLIGHT);
            let done = tokio::task::spawn_blocking(move || {
                pipeline(&web, &session, &mut upload, &mut from)
            });
            self.worker = Some(Worker { to, done });
        }
        self.worker.as_mut().ok_or(FsError::GeneralFailure)
    }

    /// Sends `message`; if the worker stopped, its error.
    async fn send(&mut self, message: Message) -> Result<(), FsError> {
        let worker = self.worker()?;
        if worker.to.send(message).await.is_ok() {
            return Ok(());
        }
        Err(self
            .outcome()
            .await
            .err()
            .unwrap_or(FsError::GeneralFailure))
    }

    /// How the worker ended.
    async fn outcome(&mut self) -> Result<(), FsError> {
        let Some(worker) = self.worker.take() else {
            return Err(FsError::GeneralFailure);
        };
        drop(worker.to);
        match worker.done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(super::dav::fs_error(&e.0)),
            Err(_) => Err(FsError::GeneralFailure),
        }
    }

    /// A body that ended before a piece's worth: cut, stored and committed at once, without
    /// the pipeline's threads.
    async fn write_small(&mut self) -> Result<(), FsError> {
        let (Some(web), Some(mut upload)) = (self.web.upgrade(), self.upload.take()) else {
            return Err(FsError::GeneralFailure);
        };
        let session = self.session.clone();
        let frames = std::mem::take(&mut self.gathered);
        let done = tokio::task::spawn_blocking(move || {
            for frame in frames {
                let batch = cut(&mut upload, &frame)?;
                store_chunks(&web, &session, upload.scope(), batch)?;
            }
            commit(&web, &session, &mut upload).map(|_| ())
        })
        .await;
        match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(super::dav::fs_error(&e.0)),
            Err(_) => Err(FsError::GeneralFailure),
        }
    }

    pub async fn write(&mut self, bytes: Bytes) -> Result<(), FsError> {
        if self.finished {
            return Err(FsError::GeneralFailure);
        }
        self.received += bytes.len() as u64;
        self.gathered_len += bytes.len();
        self.gathered.push(bytes);
        if self.gathered_len >= PIECE {
            let piece = std::mem::take(&mut self.gathered);
            self.gathered_len = 0;
            self.send(Message::Piece(piece)).await?;
        }
        Ok(())
    }

    /// The end of the body: the rest of the bytes, then the commit (once).
    pub async fn finish(&mut self) -> Result<(), FsError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        if self.worker.is_none() {
            return self.write_small().await;
        }
        if !self.gathered.is_empty() {
            let piece = std::mem::take(&mut self.gathered);
            self.send(Message::Piece(piece)).await?;
        }
        self.send(Message::Finish).await?;
        self.outcome().await
    }
}
