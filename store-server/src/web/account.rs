//! The account page (what is stored, the devices and browsers signed in, signing one out)
//! and search by name across the store. `Status`, `ListDevices`, `RevokeDevice` and
//! `ReadDir` through the handler, as the session.

use super::pages::{dates, encode_path, human_size, render, signed_in};
use super::sessions::WebSession;
use super::{Peer, Web, WebError};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use shelf_protocol::{ErrorCode, NodeKind, Request, Response as Answer, MAX_BATCH};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A search looks at this many entries at most, for this long at most.
const SEARCH_ENTRIES: usize = 200_000;
const SEARCH_TIME: Duration = Duration::from_secs(5);
/// Results shown at most.
const SEARCH_RESULTS: usize = 500;

struct DeviceRow {
    name: String,
    created: String,
    expires: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    user: String,
    role: String,
    csrf: String,
    files: u64,
    dirs: u64,
    logical: String,
    stored: String,
    old_versions: u64,
    history: String,
    /// Quota: used and allowed, and the share used (0–100) for the meter.
    quota: Option<(String, u64)>,
    alerts: Vec<AlertRow>,
    devices: Vec<DeviceRow>,
    /// App passwords: name and when made.
    app_passwords: Vec<(String, String)>,
}

struct AlertRow {
    at: String,
    what: String,
    detail: String,
}

pub async fn account(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let got = super::page_data(&web, peer, &headers, move |w, s| {
        let status = match s.call(&w.store, Request::Status)? {
            Answer::Status(st) => st,
            _ => return Err(ErrorCode::Internal.into()),
        };
        let devices = match s.call(&w.store, Request::ListDevices)? {
            Answer::Devices(d) => d,
            _ => return Err(ErrorCode::Internal.into()),
        };
        let apps = match s.call(&w.store, Request::ListAppPasswords)? {
            Answer::AppPasswords(a) => a,
            _ => return Err(ErrorCode::Internal.into()),
        };
        Ok((status, devices, apps))
    })
    .await;
    let (session, (st, devices, apps)) = match got {
        Ok(x) => x,
        Err(r) => return r,
    };
    render(&AccountPage {
        user: st.user,
        role: format!("{:?}", st.role).to_lowercase(),
        csrf: web.sessions.csrf(&session),
        files: st.files,
        dirs: st.dirs,
        logical: human_size(st.logical_bytes),
        stored: human_size(st.stored_bytes),
        old_versions: st.old_versions,
        history: human_size(st.history_bytes),
        quota: st.quota.map(|q| {
            (
                format!("{} of {}", human_size(st.stored_bytes), human_size(q)),
                (st.stored_bytes.saturating_mul(100) / q.max(1)).min(100),
            )
        }),
        alerts: st
            .alerts
            .into_iter()
            .rev()
            .map(|a| AlertRow {
                at: dates(a.at.secs).0,
                what: a.what.trim_start_matches("alert-").to_string(),
                detail: a.detail,
            })
            .collect(),
        devices: devices
            .into_iter()
            .map(|d| DeviceRow {
                name: d.device,
                created: dates(d.created.secs).0,
                expires: dates(d.expires.secs).0,
                current: d.current,
            })
            .collect(),
        app_passwords: apps
            .into_iter()
            .map(|a| (a.name, dates(a.created.secs).0))
            .collect(),
    })
}

#[derive(Deserialize)]
pub struct AppPassword {
    name: String,
}

/// `POST /api/app-password`: makes an app password; answers its secret (shown once).
pub async fn add_app_password(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(req): Json<AppPassword>,
) -> Response {
    super::api_answer(web, peer, headers, move |w, session| {
        match session.call(&w.store, Request::AddAppPassword { name: req.name })? {
            Answer::AppPassword { name, secret } => {
                Ok(serde_json::json!({ "name": name, "secret": secret }))
            }
            _ => Err(ErrorCode::Internal.into()),
        }
    })
    .await
}

/// `POST /api/app-password/revoke`.
pub async fn revoke_app_password(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(req): Json<AppPassword>,
) -> Response {
    super::api_change(web, peer, headers, move |web, session| {
        session.call(&web.store, Request::RevokeAppPassword { name: req.name })?;
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
pub struct Revoke {
    device: String,
}

/// `POST /api/revoke`: signs one of the account's devices or browsers out.
pub async fn revoke(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(req): Json<Revoke>,
) -> Response {
    super::api_change(web, peer, headers, move |web, session| {
        session.call(&web.store, Request::RevokeDevice { device: req.device })?;
        Ok(())
    })
    .await
}

struct Found {
    name: String,
    href: String,
    folder: String,
    folder_href: String,
    size: String,
    class: &'static str,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    user: String,
    csrf: String,
    query: String,
    results: Vec<Found>,
    partial: bool,
    looked: usize,
}

#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// Walks the store breadth first from its top for names containing `query` (any case).
fn find(
    web: &Web,
    session: &WebSession,
    query: &str,
) -> Result<(Vec<Found>, bool, usize), WebError> {
    let needle = query.to_lowercase();
    let started = Instant::now();
    let mut queue = VecDeque::from([(session.root, Vec::<String>::new())]);
    let (mut found, mut looked) = (Vec::new(), 0usize);
    while let Some((dir, path)) = queue.pop_front() {
        let mut after = None;
        loop {
            if looked >= SEARCH_ENTRIES
                || started.elapsed() > SEARCH_TIME
                || found.len() >= SEARCH_RESULTS
            {
                return Ok((found, true, looked));
            }
            let page = session.call(
                &web.store,
                Request::ReadDir {
                    dir,
                    after: after.clone(),
                    limit: MAX_BATCH as u32,
                },
            );
            let (entries, more) = match page {
                Ok(Answer::DirPage { entries, more }) => (entries, more),
                // A folder that went away meanwhile, or one this session may not read.
                Ok(_) | Err(_) => break,
            };
            after = entries.last().map(|e| e.name.clone());
            looked += entries.len();
            for e in entries {
                let mut child = path.clone();
                child.push(e.name.clone());
                let is_dir = e.attr.kind == NodeKind::Dir;
                if e.name.to_lowercase().contains(&needle) {
                    found.push(Found {
                        href: match is_dir {
                            true => format!("/files/{}/", encode_path(&child)),
                            false => format!("/dl/{}", encode_path(&child)),
                        },
                        folder: match path.is_empty() {
                            true => "/".into(),
                            false => path.join("/"),
                        },
                        folder_href: match path.is_empty() {
                            true => "/files/".into(),
                            false => format!("/files/{}/", encode_path(&path)),
                        },
                        size: match is_dir {
                            true => String::new(),
                            false => human_size(e.attr.size),
                        },
                        class: if is_dir { "dir" } else { "file" },
                        name: e.name.clone(),
                    });
                }
                if is_dir {
                    queue.push_back((e.attr.node, child));
                }
            }
            if !more || after.is_none() {
                break;
            }
        }
    }
    Ok((found, false, looked))
}

pub async fn search(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> Response {
    let session = match signed_in(&web, peer, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let query = q.q.trim().to_string();
    if query.is_empty() {
        return axum::response::Redirect::to("/files/").into_response();
    }
    let w = web.clone();
    let s = session.clone();
    let qq = query.clone();
    match super::blocking(move || find(&w, &s, &qq).map_err(|e| e.0)).await {
        Ok((results, partial, looked)) => render(&SearchPage {
            user: session.user.clone(),
            csrf: web.sessions.csrf(&session),
            query,
            results,
            partial,
            looked,
        }),
        Err(e) => e.into_response(),
    }
}
