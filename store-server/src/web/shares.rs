//! Sharing from the browser: share a file or folder with another user read-only or
//! read-write (`POST /api/share`), list what is shared by and with the account and its
//! public links (`/shares`), end a share (`POST /api/unshare`), make a public link
//! (`POST /api/link`: download or upload-only, optional password and expiry) and end one
//! (`POST /api/unlink`). The store's `Share`, `ListShares`, `Unshare`, `CreateLink`,
//! `ListLinks` and `RevokeLink` decide who may do what (an owner shares, a recipient may
//! only leave).

use super::pages::{components, render, resolve};
use super::{Peer, Web};
use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Extension, Json};
use serde::Deserialize;
use shelf_protocol::{ErrorCode, LinkAccess, LinkInfo, NodeId, Request, Response as Answer};
use std::sync::Arc;

struct Row {
    node: NodeId,
    path: String,
    href: String,
    owner: String,
    recipient: String,
    write: bool,
}

struct LinkRow {
    id: u64,
    path: String,
    href: String,
    url: String,
    access: &'static str,
    password: bool,
    expires: String,
}

#[derive(Template)]
#[template(path = "shares.html")]
struct SharesPage {
    user: String,
    csrf: String,
    shares: Vec<Row>,
    links: Vec<LinkRow>,
}

/// A link's address, as its owner hands it out.
fn link_url(headers: &HeaderMap, token: &str) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("https://{host}/s/{token}")
}

fn path_href(path: &str) -> String {
    let parts: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    format!("/files/{}", super::pages::encode_path(&parts))
}

pub async fn list(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let got = super::page_data(&web, peer, &headers, move |w, s| {
        let shares = match s.call(&w.store, Request::ListShares)? {
            Answer::Shares(list) => list,
            _ => return Err(ErrorCode::Internal.into()),
        };
        match s.call(&w.store, Request::ListLinks)? {
            Answer::Links(links) => Ok((shares, links)),
            _ => Err(ErrorCode::Internal.into()),
        }
    })
    .await;
    let (session, (shares, links)) = match got {
        Ok(x) => x,
        Err(r) => return r,
    };
    render(&SharesPage {
        user: session.user.clone(),
        csrf: web.sessions.csrf(&session),
        shares: shares
            .into_iter()
            .map(|s| Row {
                node: s.node,
                href: path_href(&s.path),
                path: s.path,
                owner: s.owner,
                recipient: s.recipient,
                write: s.write,
            })
            .collect(),
        links: links
            .into_iter()
            .map(|l| LinkRow {
                id: l.id,
                href: path_href(&l.path),
                url: link_url(&headers, &l.token),
                access: match l.access {
                    LinkAccess::Download => "download",
                    LinkAccess::Upload => "upload only",
                },
                password: l.password,
                expires: l
                    .expires
                    .map_or_else(|| "never".to_string(), |e| super::pages::dates(e.secs).0),
                path: l.path,
            })
            .collect(),
    })
}

#[derive(Deserialize)]
pub struct Share {
    dir: String,
    name: String,
    with: String,
    #[serde(default)]
    write: bool,
}

pub async fn share(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(req): Json<Share>,
) -> Response {
    super::api_change(web, peer, headers, move |web, session| {
        let mut parts = components(&req.dir)?;
        parts.extend(components(&req.name)?);
        let target = resolve(web, session, &parts)?;
        session.call(
            &web.store,
            Request::Share {
                node: target.node,
                with: req.with,
                write: req.write,
            },
        )?;
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
pub struct Unshare {
    node: NodeId,
    with: Option<String>,
}

pub async fn unshare(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(req): Json<Unshare>,
) -> Response {
    super::api_change(web, peer, headers, move |web, session| {
        session.call(
            &web.store,
            Request::Unshare {
                node: req.node,
                with: req.with,
            },
        )?;
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
pub struct NewLink {
    dir: String,
    name: String,
    /// `download` or `upload`.
    access: String,
    #[serde(default)]
    password: String,
    /// The last day it opens (`YYYY-MM-DD`, through the end of that day UTC), or empty.
    #[serde(default)]
    expires: String,
}

/// The end of the day `date` (`YYYY-MM-DD`) in UTC.
fn end_of_day(date: &str) -> Result<shelf_protocol::Timestamp, ErrorCode> {
    let d: jiff::civil::Date = date.parse().map_err(|_| ErrorCode::InvalidArgument)?;
    let end = d
        .at(23, 59, 59, 0)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map_err(|_| ErrorCode::InvalidArgument)?;
    Ok(shelf_protocol::Timestamp {
        secs: end.timestamp().as_second(),
        nanos: 0,
    })
}

/// Makes a public link; answers its URL.
pub async fn create_link(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(req): Json<NewLink>,
) -> Response {
    let url_of = {
        let headers = headers.clone();
        move |token: &str| link_url(&headers, token)
    };
    super::api_answer(web, peer, headers, move |w, session| {
        let access = match req.access.as_str() {
            "download" => LinkAccess::Download,
            "upload" => LinkAccess::Upload,
            _ => return Err(ErrorCode::InvalidArgument.into()),
        };
        let expires = match req.expires.trim() {
            "" => None,
            d => Some(end_of_day(d)?),
        };
        let mut parts = components(&req.dir)?;
        parts.extend(components(&req.name)?);
        let target = resolve(w, session, &parts)?;
        let answer = session.call(
            &w.store,
            Request::CreateLink {
                node: target.node,
                access,
                password: (!req.password.is_empty()).then_some(req.password),
                expires,
            },
        )?;
        match answer {
            Answer::Links(l) => match l.as_slice() {
                [LinkInfo { id, token, .. }] => {
                    Ok(serde_json::json!({ "id": id, "url": url_of(token) }))
                }
                _ => Err(ErrorCode::Internal.into()),
            },
            _ => Err(ErrorCode::Internal.into()),
        }
    })
    .await
}

#[derive(Deserialize)]
pub struct EndLink {
    id: u64,
}

/// Ends a public link.
pub async fn revoke_link(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(req): Json<EndLink>,
) -> Response {
    super::api_change(web, peer, headers, move |web, session| {
        session.call(&web.store, Request::RevokeLink { id: req.id })?;
        Ok(())
    })
    .await
}
