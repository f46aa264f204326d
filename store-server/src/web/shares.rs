//! Sharing with other users from the browser: share a file or folder read-only or
//! read-write (`POST /api/share`), list what is shared by and with the account
//! (`/shares`), end a share (`POST /api/unshare`). The store's `Share`, `ListShares` and
//! `Unshare` decide who may do what (an owner shares, a recipient may only leave).

use super::pages::{components, render, resolve};
use super::{Peer, Web};
use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
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
    let got = super::page_data(&web, peer, &headers, move |w, s| {
        match s.call(&w.store, Request::ListShares)? {
            Answer::Shares(list) => Ok(list),
            _ => Err(ErrorCode::Internal.into()),
        }
    })
    .await;
    let (session, shares) = match got {
        Ok(x) => x,
        Err(r) => return r,
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
