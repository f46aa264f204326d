//! Whole folders as one download: `GET /zip/PATH/` streams a zip of the folder (files
//! stored as they are: photos and videos do not shrink, and storing keeps the server's
//! CPU free), written on the blocking pool while the browser reads, walking the folder
//! a page at a time and each file a chunk batch at a time through the handler. Names are
//! UTF-8; files over 4 GiB get zip64 records.

use super::pages::{resolve, SignedInPath};
use super::sessions::WebSession;
use super::{Web, WebError};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use shelf_protocol::{
    ErrorCode, NodeId, NodeKind, Request, Response as Answer, MAX_BATCH, MAX_CHUNKS_PER_REQUEST,
};
use std::io::Write;
use std::sync::Arc;
use tokio::sync::mpsc::Sender;
use zip::write::SimpleFileOptions;

/// Bytes gathered before they go to the browser.
const SEND_AT: usize = 256 << 10;

/// The zip's bytes, sent to the answer's body in pieces.
struct ToBody {
    tx: Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ToBody {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the browser left"))
    }
}

impl Write for ToBody {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SEND_AT {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

pub async fn download_folder(
    State(web): State<Arc<Web>>,
    SignedInPath { session, parts }: SignedInPath,
) -> Response {
    if parts.is_empty() {
        return WebError::from(ErrorCode::InvalidArgument).into_response();
    }
    let w = web.clone();
    let s = session.clone();
    let p = parts.clone();
    let dir = match super::blocking(move || resolve(&w, &s, &p).map_err(|e| e.0)).await {
        Ok(a) if a.kind == NodeKind::Dir => a.node,
        Ok(_) => return WebError::from(ErrorCode::NotDir).into_response(),
        Err(e) => return e.into_response(),
    };
    let name = format!("{}.zip", parts.last().cloned().unwrap_or_default());
    zip_response(web, session, dir, name)
}

/// The folder `dir` as a streamed zip named `name`.
pub fn zip_response(
    web: Arc<Web>,
    session: Arc<WebSession>,
    dir: NodeId,
    name: String,
) -> Response {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        let mut zip = zip::ZipWriter::new_stream(ToBody {
            tx,
            buf: Vec::with_capacity(SEND_AT),
        });
        let result = add_folder(&web, &session, &mut zip, dir, "")
            .and_then(|()| zip.finish().map_err(zip_err))
            .and_then(|mut out| out.flush().map_err(|e| WebError::from(io_err(e))));
        if let Err(e) = result {
            tracing::warn!(error = %e.0.message, "web: folder download stopped");
            let _ = err_tx.blocking_send(Err(std::io::Error::other(e.0.message)));
        }
    });
    let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    (
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                super::download::disposition(&name, false),
            ),
        ],
        body,
    )
        .into_response()
}

fn io_err(e: std::io::Error) -> shelf_protocol::WireError {
    shelf_protocol::WireError {
        code: ErrorCode::Internal,
        message: e.to_string(),
    }
}

fn zip_err(e: zip::result::ZipError) -> WebError {
    WebError(shelf_protocol::WireError {
        code: ErrorCode::Internal,
        message: e.to_string(),
    })
}

type Zip = zip::ZipWriter<zip::write::StreamWriter<ToBody>>;

/// Adds everything below `dir` under `prefix` (`""` or `a/b/`).
fn add_folder(
    web: &Web,
    session: &WebSession,
    zip: &mut Zip,
    dir: NodeId,
    prefix: &str,
) -> Result<(), WebError> {
    let mut after = None;
    loop {
        let page = session.call(
            &web.store,
            Request::ReadDir {
                dir,
                after: after.clone(),
                limit: MAX_BATCH as u32,
            },
        )?;
        let Answer::DirPage { entries, more } = page else {
            return Err(WebError::from(ErrorCode::Internal));
        };
        after = entries.last().map(|e| e.name.clone());
        for e in entries {
            let path = format!("{prefix}{}", e.name);
            match e.attr.kind {
                NodeKind::Dir => {
                    zip.add_directory(format!("{path}/"), SimpleFileOptions::default())
                        .map_err(zip_err)?;
                    add_folder(web, session, zip, e.attr.node, &format!("{path}/"))?;
                }
                NodeKind::File => add_file(web, session, zip, e.attr.node, &path)?,
                // Links and special files have no content to put in a zip.
                _ => {}
            }
        }
        if !more || after.is_none() {
            return Ok(());
        }
    }
}

fn add_file(
    web: &Web,
    session: &WebSession,
    zip: &mut Zip,
    node: NodeId,
    path: &str,
) -> Result<(), WebError> {
    let (size, chunks) = match session.call(&web.store, Request::GetManifest { node })? {
        Answer::Manifest { size, chunks, .. } => (size, chunks),
        _ => return Err(WebError::from(ErrorCode::Internal)),
    };
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(size >= u32::MAX as u64);
    zip.start_file(path, options).map_err(zip_err)?;
    for batch in chunks.chunks(MAX_CHUNKS_PER_REQUEST) {
        let ids = batch.iter().map(|c| c.id).collect();
        match session.call(&web.store, Request::GetChunks { node, ids })? {
            Answer::Chunks(bodies) if bodies.len() == batch.len() => {
                for b in bodies {
                    zip.write_all(&b.data)
                        .map_err(|e| WebError::from(io_err(e)))?;
                }
            }
            _ => return Err(WebError::from(ErrorCode::Internal)),
        }
    }
    Ok(())
}
