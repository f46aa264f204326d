//! Photos and videos in the page: `GET /thumb/PATH?v=VERSION` answers a photo's thumbnail
//! (made on the server from the file read as the session, then kept sealed in the store's
//! cache per version, [`crate::store::thumbnails`]), and `/view/PATH` shows one photo or
//! plays one video with the folder's previous and next ones.
//!
//! Making a thumbnail decodes an untrusted file: only known image types up to
//! [`MAX_SOURCE`] bytes, with the decoder's limits on dimensions and memory, and at most
//! [`MAKERS`] at a time so a folder of new photos cannot take every core.

use super::pages::{crumbs, encode_path, render, resolve, SignedInPath};
use super::sessions::WebSession;
use super::{blocking, Web, WebError};
use askama::Template;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use shelf_protocol::{ErrorCode, NodeKind, Request, Response as Answer, MAX_CHUNKS_PER_REQUEST};
use std::sync::Arc;

/// Thumbnails fit in this square (pixels), enough for a grid on a high-density screen.
pub const EDGE: u32 = 320;
/// Photos larger than this get no thumbnail (the grid shows the name).
pub const MAX_SOURCE: u64 = 64 << 20;
/// Thumbnails made at once (each decodes a whole photo).
pub const MAKERS: usize = 2;
/// Largest picture decoded, in pixels on a side, and memory the decoder may take.
const MAX_SIDE: u32 = 20_000;
const MAX_DECODE_BYTES: u64 = 512 << 20;

/// What kind of medium a name is, by its extension.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Medium {
    /// A photo the server can make a thumbnail of.
    Photo,
    /// A picture the browser shows but the server does not decode (AVIF, HEIC…).
    Picture,
    Video,
}

pub fn medium(name: &str) -> Option<Medium> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" | "png" | "gif" | "webp" => Some(Medium::Photo),
        "avif" => Some(Medium::Picture),
        "mp4" | "m4v" | "webm" | "mov" => Some(Medium::Video),
        _ => None,
    }
}

/// Limits how many thumbnails are made at once.
pub struct Makers(tokio::sync::Semaphore);

impl Default for Makers {
    fn default() -> Makers {
        Makers(tokio::sync::Semaphore::new(MAKERS))
    }
}

/// A photo as a small JPEG: decoded within limits, turned upright (EXIF orientation),
/// scaled to fit [`EDGE`].
pub fn make_thumbnail(photo: &[u8]) -> Result<Vec<u8>, image::ImageError> {
    use image::ImageDecoder;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(photo)).with_guessed_format()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder()?;
    let orientation = decoder.orientation()?;
    let mut img = image::DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    let small = img.thumbnail(EDGE, EDGE).to_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82).encode_image(&small)?;
    Ok(out)
}

/// The whole content of a file (small enough: checked by the caller), read as `session`.
fn read_file(web: &Web, session: &WebSession, node: u64) -> Result<Vec<u8>, WebError> {
    let chunks = match session.call(&web.store, Request::GetManifest { node })? {
        Answer::Manifest { chunks, .. } => chunks,
        _ => return Err(WebError::from(ErrorCode::Internal)),
    };
    let mut out = Vec::new();
    for batch in chunks.chunks(MAX_CHUNKS_PER_REQUEST) {
        let ids = batch.iter().map(|c| c.id).collect();
        match session.call(&web.store, Request::GetChunks { node, ids })? {
            Answer::Chunks(bodies) if bodies.len() == batch.len() => {
                for b in bodies {
                    out.extend_from_slice(&b.data);
                }
            }
            _ => return Err(WebError::from(ErrorCode::Internal)),
        }
    }
    Ok(out)
}

/// The thumbnail of the photo at `parts`: from the cache, or made now and kept.
fn thumbnail_of(web: &Web, session: &WebSession, parts: &[String]) -> Result<Vec<u8>, WebError> {
    let name = parts.last().ok_or(WebError::from(ErrorCode::IsDir))?;
    let attr = resolve(web, session, parts)?;
    if attr.kind != NodeKind::File || medium(name) != Some(Medium::Photo) {
        return Err(WebError::from(ErrorCode::NotFound));
    }
    if let Some(cached) = web
        .store
        .thumbnail(attr.node, attr.version)
        .map_err(|e| WebError(e.to_wire()))?
    {
        return Ok(cached);
    }
    if attr.size > MAX_SOURCE {
        return Err(WebError::from(ErrorCode::TooLarge));
    }
    let photo = read_file(web, session, attr.node)?;
    let jpeg = make_thumbnail(&photo).map_err(|e| {
        tracing::debug!(node = attr.node, error = %e, "web: no thumbnail");
        WebError::from(ErrorCode::InvalidArgument)
    })?;
    if let Err(e) = web.store.keep_thumbnail(attr.node, attr.version, &jpeg) {
        tracing::warn!(error = %e, "web: could not keep a thumbnail");
    }
    Ok(jpeg)
}

pub async fn thumbnail(
    State(web): State<Arc<Web>>,
    SignedInPath { session, parts }: SignedInPath,
) -> Response {
    let Ok(_turn) = web.thumbnail_makers.0.acquire().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let w = web.clone();
    match blocking(move || thumbnail_of(&w, &session, &parts).map_err(|e| e.0)).await {
        Ok(jpeg) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                // The URL names the version: the same URL is always the same picture.
                (header::CACHE_CONTROL, "private, max-age=604800, immutable"),
            ],
            jpeg,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Template)]
#[template(path = "view.html")]
struct ViewPage {
    user: String,
    csrf: String,
    name: String,
    crumbs: Vec<super::pages::Crumb>,
    src: String,
    video: bool,
    folder: String,
    history: String,
    prev: Option<String>,
    next: Option<String>,
    position: String,
}

/// The photos and videos of the folder `dir`, by name (a folder's first 10,000 entries).
fn media_in(web: &Web, session: &WebSession, dir: u64) -> Result<Vec<String>, WebError> {
    let mut names = Vec::new();
    let mut after = None;
    loop {
        let (entries, more) = match session.call(
            &web.store,
            Request::ReadDir {
                dir,
                after,
                limit: 1024,
            },
        )? {
            Answer::DirPage { entries, more } => (entries, more),
            _ => return Err(WebError::from(ErrorCode::Internal)),
        };
        after = entries.last().map(|e| e.name.clone());
        names.extend(
            entries
                .into_iter()
                .filter(|e| e.attr.kind == NodeKind::File && medium(&e.name).is_some())
                .map(|e| e.name),
        );
        if !more || after.is_none() || names.len() >= super::pages::MAX_SORTED {
            break;
        }
    }
    names.sort();
    Ok(names)
}

/// One photo or video, with the folder's previous and next.
pub async fn view(
    State(web): State<Arc<Web>>,
    SignedInPath { session, parts }: SignedInPath,
) -> Response {
    let Some((name, dir)) = parts.split_last() else {
        return WebError::from(ErrorCode::IsDir).into_response();
    };
    let Some(kind) = medium(name) else {
        return WebError::from(ErrorCode::NotFound).into_response();
    };
    let (name, dir) = (name.clone(), dir.to_vec());
    let w = web.clone();
    let s = session.clone();
    let d = dir.clone();
    let n = name.clone();
    let found = blocking(move || {
        let found = || {
            let folder = resolve(&w, &s, &d)?;
            let file = resolve(&w, &s, &[d.clone(), vec![n]].concat())?;
            if file.kind != NodeKind::File {
                return Err(WebError::from(ErrorCode::IsDir));
            }
            media_in(&w, &s, folder.node)
        };
        found().map_err(|e| e.0)
    })
    .await;
    let media = match found {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let at = media.iter().position(|m| *m == name);
    let href = |other: &String| {
        format!(
            "/view/{}",
            encode_path(&[dir.clone(), vec![other.clone()]].concat())
        )
    };
    let prev = at
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| media.get(i))
        .map(href);
    let next = at.and_then(|i| media.get(i + 1)).map(href);
    let whole = [dir.clone(), vec![name.clone()]].concat();
    render(&ViewPage {
        user: session.user.clone(),
        csrf: web.sessions.csrf(&session),
        crumbs: crumbs(&dir),
        src: format!("/dl/{}", encode_path(&whole)),
        video: kind == Medium::Video,
        folder: match dir.is_empty() {
            true => "/files/".into(),
            false => format!("/files/{}/", encode_path(&dir)),
        },
        history: super::history::history_href(&dir, &name),
        position: at.map_or_else(String::new, |i| format!("{} of {}", i + 1, media.len())),
        name,
        prev,
        next,
    })
}

/// The link a folder row's name opens: the viewer for photos and videos, else the file.
pub fn open_href(dir: &[String], name: &str) -> String {
    let whole = encode_path(&[dir.to_vec(), vec![name.to_string()]].concat());
    match medium(name) {
        Some(_) => format!("/view/{whole}"),
        None => format!("/dl/{whole}"),
    }
}

/// The thumbnail URL of a photo (by version: a new version is a new URL).
pub fn thumb_href(dir: &[String], name: &str, version: u64) -> Option<String> {
    (medium(name) == Some(Medium::Photo)).then(|| {
        format!(
            "/thumb/{}?v={version}",
            encode_path(&[dir.to_vec(), vec![name.to_string()]].concat())
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wide photo becomes a JPEG within the edge, keeping its shape; a picture that claims
    /// to be huge, or is not a picture, gets none.
    #[test]
    fn thumbnails_are_small_jpegs_and_bombs_are_refused() {
        let img = image::RgbImage::from_fn(640, 320, |x, _| image::Rgb([(x % 256) as u8, 0, 0]));
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let jpeg = make_thumbnail(&png).unwrap();
        assert_eq!(&jpeg[..2], b"\xff\xd8");
        let t = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((t.width(), t.height()), (EDGE, EDGE / 2));
        // A PNG header claiming 100,000 × 100,000 pixels: refused before any allocation.
        let mut bomb = png.clone();
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(make_thumbnail(&bomb).is_err());
        assert!(make_thumbnail(b"not a picture").is_err());
        assert_eq!(medium("a.JPG"), Some(Medium::Photo));
        assert_eq!(medium("clip.mp4"), Some(Medium::Video));
        assert_eq!(medium("notes.txt"), None);
    }
}
