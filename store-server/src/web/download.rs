//! File downloads: `GET /dl/PATH` streams a file's current version, chunk batches fetched
//! through the protocol handler as the browser reads. One byte range (`Range: bytes=A-B`,
//! `A-`, `-N`) is answered 206 with only the chunks it covers, so videos seek and
//! downloads resume; anything else gets the whole file. Names go out as RFC 6266
//! `filename*` (UTF-8). Only types a browser shows safely (pictures, audio, video, PDF,
//! plain text) are shown inline; everything else, HTML and SVG included, is an attachment,
//! and every download is sandboxed by its Content-Security-Policy.

use super::pages::{resolve, SignedInPath};
use super::sessions::WebSession;
use super::{Web, WebError};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use shelf_protocol::{
    ChunkRef, ErrorCode, NodeId, NodeKind, Request, Response as Answer, MAX_CHUNKS_PER_REQUEST,
};
use std::sync::Arc;

/// Chunk batches read ahead of the browser.
const AHEAD: usize = 4;

/// A `Range` header that names no byte of the file (answered 416).
#[derive(Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

/// Which bytes of a `len`-byte file a `Range` header asks for: `None` for the whole file,
/// `Err` when the range cannot be satisfied.
pub fn parse_range(header: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        // Several ranges: answered with the whole file, which RFC 9110 allows.
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ok(None),
        (true, false) => {
            let n: u64 = b.parse().map_err(|_| Unsatisfiable)?;
            if n == 0 || len == 0 {
                return Err(Unsatisfiable);
            }
            (len.saturating_sub(n), len - 1)
        }
        (false, _) => {
            let start: u64 = a.parse().map_err(|_| Unsatisfiable)?;
            let end: u64 = match b.is_empty() {
                true => len.saturating_sub(1),
                false => b
                    .parse::<u64>()
                    .map_err(|_| Unsatisfiable)?
                    .min(len.saturating_sub(1)),
            };
            if start >= len || end < start {
                return Err(Unsatisfiable);
            }
            (start, end)
        }
    };
    Ok(Some(range))
}

/// The MIME type for a name, and whether a browser may show it inline.
pub fn content_type(name: &str) -> (&'static str, bool) {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => ("image/jpeg", true),
        "png" => ("image/png", true),
        "gif" => ("image/gif", true),
        "webp" => ("image/webp", true),
        "avif" => ("image/avif", true),
        "mp4" | "m4v" => ("video/mp4", true),
        "webm" => ("video/webm", true),
        "mov" => ("video/quicktime", true),
        "mp3" => ("audio/mpeg", true),
        "ogg" | "oga" => ("audio/ogg", true),
        "wav" => ("audio/wav", true),
        "pdf" => ("application/pdf", true),
        "txt" | "md" | "log" | "csv" => ("text/plain; charset=utf-8", true),
        _ => ("application/octet-stream", false),
    }
}

/// `Content-Disposition` with the name in RFC 5987 form (and an ASCII fallback).
pub fn disposition(name: &str, inline: bool) -> String {
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    format!(
        "{}; filename=\"{ascii}\"; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        super::pages::encode(name)
    )
}

pub async fn download(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    SignedInPath { session, parts }: SignedInPath,
) -> Response {
    if parts.is_empty() {
        return WebError::from(ErrorCode::IsDir).into_response();
    }
    let w = web.clone();
    let s = session.clone();
    let p = parts.clone();
    let found = super::blocking(move || manifest(&w, &s, &p).map_err(|e| e.0)).await;
    let (node, size, chunks) = match found {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let name = parts.last().cloned().unwrap_or_default();
    respond(web, session, &headers, node, &name, size, chunks)
}

/// The answer to a download of `name` (`size` bytes in `chunks` of `node`): the whole file
/// or the one range asked for, streamed.
pub fn respond(
    web: Arc<Web>,
    session: Arc<WebSession>,
    headers: &HeaderMap,
    node: NodeId,
    name: &str,
    size: u64,
    chunks: Vec<ChunkRef>,
) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (status, start, end) = match parse_range(range.as_deref(), size) {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
        Err(Unsatisfiable) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response()
        }
    };
    let (mime, inline) = content_type(name);
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, mime)
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_DISPOSITION, disposition(name, inline))
        .header(header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'; media-src 'self'; img-src 'self'; style-src 'unsafe-inline'");
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    let body = stream(web, session, node, chunks, start, end);
    resp.body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The node, size and chunk list of the file at `parts`.
pub fn manifest(
    web: &Web,
    session: &WebSession,
    parts: &[String],
) -> Result<(NodeId, u64, Vec<ChunkRef>), WebError> {
    let attr = resolve(web, session, parts)?;
    if attr.kind == NodeKind::Dir {
        return Err(WebError::from(ErrorCode::IsDir));
    }
    match session.call(&web.store, Request::GetManifest { node: attr.node })? {
        Answer::Manifest { size, chunks, .. } => Ok((attr.node, size, chunks)),
        _ => Err(WebError::from(ErrorCode::Internal)),
    }
}

/// Bytes `start..end` of the file, fetched a batch of chunks at a time on the blocking
/// pool while the browser reads the previous ones.
fn stream(
    web: Arc<Web>,
    session: Arc<WebSession>,
    node: NodeId,
    chunks: Vec<ChunkRef>,
    start: u64,
    end: u64,
) -> Body {
    // The chunks the range covers, each with the offset it starts at.
    let mut wanted = Vec::new();
    let mut at = 0u64;
    for c in chunks {
        let len = u64::from(c.len);
        if at + len > start && at < end {
            wanted.push((at, c));
        }
        at += len;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(AHEAD);
    tokio::task::spawn_blocking(move || {
        for batch in wanted.chunks(MAX_CHUNKS_PER_REQUEST) {
            let ids = batch.iter().map(|(_, c)| c.id).collect();
            let bodies = match session.call(&web.store, Request::GetChunks { node, ids }) {
                Ok(Answer::Chunks(b)) if b.len() == batch.len() => b,
                Ok(_) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other("bad chunk answer")));
                    return;
                }
                Err(e) => {
                    tracing::warn!(node, error = %e.message, "web: download failed");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.message)));
                    return;
                }
            };
            for ((offset, _), body) in batch.iter().zip(bodies) {
                let from = start.saturating_sub(*offset) as usize;
                let to = ((end - offset) as usize).min(body.data.len());
                let mut data = body.data;
                data.truncate(to);
                let bytes = Bytes::from(data).slice(from.min(to)..);
                if tx.blocking_send(Ok(bytes)).is_err() {
                    return; // the browser went away
                }
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), Ok(Some((50, 99))));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=9-3"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=x-3"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
    }

    #[test]
    fn only_safe_types_show_inline_and_names_keep_their_utf8() {
        assert_eq!(content_type("a.JPG"), ("image/jpeg", true));
        assert!(!content_type("page.html").1);
        assert!(!content_type("icon.svg").1);
        assert_eq!(
            disposition("résumé \"x\".pdf", true),
            "inline; filename=\"r_sum_ _x_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22.pdf"
        );
    }
}
