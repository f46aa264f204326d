//! Sharing with other users from the browser: share a file or folder read-only or
//! read-write (`POST /api/share`), list what is shared by and with the account
//! (`/shares`), end a share (`POST /api/unshare`). The store's `Share`, `ListShares` and
//! `Unshare` decide who may do what (an owner shares, a recipient may only leave).

use super::pages::{components, render, resolve, signed_in};
use super::upload::api_session;
use super::{Peer, Web, WebError};
use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use shelf_protocol::{ErrorCode, NodeId, Request, Response as Answer};
use std::sync::Arc;

struct Row {
    node: NodeId,
    path: String,
    href: String,
    owner: String,
    recipient: String,
    write: bool,
}

#[derive(Template)]
#[template(path = "shares.html")]
struct SharesPage {
    user: String,
    csrf: String,
    shares: Vec<Row>,
}

pub async fn list(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let session = match signed_in(&web, peer, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let w = web.clone();
    let s = session.clone();
    let got = super::blocking(move || match s.call(&w.store, Request::ListShares)? {
        Answer::Shares(list) => Ok(list),
        _ => Err(ErrorCode::Internal.into()),
    })
    .await;
    let shares = match got {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    render(&SharesPage {
        user: session.user.clone(),
        csrf: web.sessions.csrf(&session),
        shares: shares
            .into_iter()
            .map(|s| {
                let parts: Vec<String> = s
                    .path
                    .split('/')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect();
                Row {
                    node: s.node,
                    href: format!("/files/{}", super::pages::encode_path(&parts)),
                    path: s.path,
                    owner: s.owner,
                    recipient: s.recipient,
                    write: s.write,
                }
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
    let session = match api_session(&web, peer, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let w = web.clone();
    let done = super::blocking(move || {
        let mut parts = components(&req.dir).map_err(|e| e.0)?;
        parts.extend(components(&req.name).map_err(|e| e.0)?);
        let target = resolve(&w, &session, &parts).map_err(|e| e.0)?;
        session.call(
            &w.store,
            Request::Share {
                node: target.node,
                with: req.with,
                write: req.write,
            },
        )?;
        Ok(())
    })
    .await;
    ok_or(done)
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
    let session = match api_session(&web, peer, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let w = web.clone();
    let done = super::blocking(move || {
        session.call(
            &w.store,
            Request::Unshare {
                node: req.node,
                with: req.with,
            },
        )?;
        Ok(())
    })
    .await;
    ok_or(done)
}

fn ok_or(done: Result<(), WebError>) -> Response {
    match done {
        Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => e.into_response(),
    }
}
