//! History from the browser: the versions of one file (`/history/PATH`), the deleted
//! files of a folder (`/deleted/PATH/`), any version downloaded (`/version/N/PATH`), and
//! restores of one or many (`POST /api/restore`). The store's `ListVersions`, `GetVersion`
//! and `Restore` do the work, so a restored file keeps its history (the restore is its
//! newest version) exactly as `shelf restore` does.

use super::download::respond;
use super::pages::{components, encode_path, human_size, resolve, signed_in, Crumb};
use super::sessions::WebSession;
use super::{Peer, Web, WebError};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use shelf_protocol::{ErrorCode, NodeId, NodeKind, Request, Response as Answer, VersionInfo};
use std::collections::BTreeMap;
use std::sync::Arc;

struct Row {
    name: String,
    number: u64,
    href: String,
    size: String,
    date: String,
    iso: String,
    device: String,
}

#[derive(Template)]
#[template(path = "versions.html")]
struct VersionsPage {
    title: String,
    user: String,
    csrf: String,
    dir: String,
    crumbs: Vec<Crumb>,
    deleted_view: bool,
    versions: Vec<Row>,
}

/// The history of every name in the folder at `parts`.
pub(super) fn history(
    web: &Web,
    session: &WebSession,
    parts: &[String],
) -> Result<(NodeId, Vec<VersionInfo>), WebError> {
    let dir = resolve(web, session, parts)?;
    if dir.kind != NodeKind::Dir {
        return Err(WebError::from(ErrorCode::NotDir));
    }
    match session.call(&web.store, Request::ListVersions { dir: dir.node })? {
        Answer::Versions(v) => Ok((dir.node, v)),
        _ => Err(WebError::from(ErrorCode::Internal)),
    }
}

fn row(dir: &[String], v: &VersionInfo) -> Row {
    let (date, iso) = super::pages::dates(v.mtime.secs);
    Row {
        href: format!(
            "/version/{}/{}",
            v.number,
            encode_path(&[dir.to_vec(), vec![v.name.clone()]].concat())
        ),
        name: v.name.clone(),
        number: v.number,
        size: human_size(v.size),
        date,
        iso,
        device: v.device.clone(),
    }
}

async fn page(
    web: Arc<Web>,
    peer: Peer,
    headers: HeaderMap,
    path: String,
    deleted_view: bool,
) -> Response {
    let session = match signed_in(&web, peer, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut parts = match components(&path) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    // `/history/DIR/NAME`: the folder is everything but the name.
    let name = match deleted_view {
        true => None,
        false => match parts.pop() {
            Some(n) => Some(n),
            None => return WebError::from(ErrorCode::InvalidName).into_response(),
        },
    };
    let w = web.clone();
    let s = session.clone();
    let p = parts.clone();
    let listed = super::blocking(move || history(&w, &s, &p).map_err(|e| e.0)).await;
    let versions = match listed {
        Ok((_, v)) => v,
        Err(e) => return e.into_response(),
    };
    let rows: Vec<Row> = match &name {
        // Newest first.
        Some(n) => versions
            .iter()
            .rev()
            .filter(|v| &v.name == n)
            .map(|v| row(&parts, v))
            .collect(),
        // The newest version of each name that is gone.
        None => {
            let mut last: BTreeMap<&str, &VersionInfo> = BTreeMap::new();
            for v in &versions {
                let newer = last
                    .get(v.name.as_str())
                    .is_none_or(|l| l.number < v.number);
                if newer {
                    last.insert(&v.name, v);
                }
            }
            last.values()
                .filter(|v| v.deleted)
                .map(|v| row(&parts, v))
                .collect()
        }
    };
    if name.is_some() && rows.is_empty() {
        // No file of that name ever lived here.
        return WebError::from(ErrorCode::NotFound).into_response();
    }
    let crumbs = super::pages::crumbs(&parts);
    let title = match &name {
        Some(n) => format!("Versions of {n}"),
        None => format!(
            "Deleted files in {}",
            parts.last().map(String::as_str).unwrap_or("Home")
        ),
    };
    super::pages::render(&VersionsPage {
        title,
        user: session.user.clone(),
        csrf: web.sessions.csrf(&session),
        dir: parts.join("/"),
        crumbs,
        deleted_view,
        versions: rows,
    })
}

pub async fn versions(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    page(web, peer, headers, path, false).await
}

pub async fn deleted(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    page(web, peer, headers, path, true).await
}

pub async fn deleted_root(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    page(web, peer, headers, String::new(), true).await
}

/// `GET /version/N/PATH`: version N of a file (also of a deleted one), ranges and all.
pub async fn download_version(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((number, path)): Path<(u64, String)>,
) -> Response {
    let session = match signed_in(&web, peer, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut parts = match components(&path) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let Some(name) = parts.pop() else {
        return WebError::from(ErrorCode::InvalidName).into_response();
    };
    let w = web.clone();
    let s = session.clone();
    let n = name.clone();
    let found = super::blocking(move || {
        let (_, versions) = history(&w, &s, &parts).map_err(|e| e.0)?;
        let v = versions
            .into_iter()
            .find(|v| v.name == n && v.number == number)
            .ok_or(ErrorCode::NotFound)?;
        match s.call(
            &w.store,
            Request::GetVersion {
                node: v.node,
                version: v.version,
            },
        )? {
            Answer::Manifest { size, chunks, .. } => Ok((v.node, size, chunks)),
            _ => Err(ErrorCode::Internal.into()),
        }
    })
    .await;
    match found {
        Ok((node, size, chunks)) => {
            let shown = shelf_protocol::names::version_name(&name, number);
            let shown = match name.rsplit_once('.') {
                // Keep the extension last, so the download opens with the right program.
                Some((stem, ext)) if !stem.is_empty() => format!("{stem}.v{number:02}.{ext}"),
                _ => shown,
            };
            respond(web, session, &headers, node, &shown, size, chunks)
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub struct RestoreItem {
    name: String,
    number: u64,
}

#[derive(Deserialize)]
pub struct Restore {
    dir: String,
    items: Vec<RestoreItem>,
}

/// `POST /api/restore`: each named version becomes its file's newest version (a deleted
/// file comes back).
pub async fn restore(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(req): Json<Restore>,
) -> Response {
    super::api_change(web, peer, headers, move |web, session| {
        let dir = resolve(web, session, &components(&req.dir)?)?;
        for item in req.items {
            session.call(
                &web.store,
                Request::Restore {
                    dir: dir.node,
                    name: item.name,
                    number: item.number,
                },
            )?;
        }
        Ok(())
    })
    .await
}

/// Links from a folder page: a file's history, the folder's deleted files.
pub fn history_href(dir: &[String], name: &str) -> String {
    format!(
        "/history/{}",
        encode_path(&[dir.to_vec(), vec![name.to_string()]].concat())
    )
}

pub fn deleted_href(dir: &[String]) -> String {
    match dir.is_empty() {
        true => "/deleted/".into(),
        false => format!("/deleted/{}/", encode_path(dir)),
    }
}
