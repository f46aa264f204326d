//! Changes from the browser: new folder, rename, move, delete (a folder with everything
//! in it, as file managers do). JSON calls with the session's CSRF header, each made of
//! protocol requests run by the handler as the session (so a viewer or a read-only share
//! is refused there, and deleted files keep their history like a mount's deletes).

use super::pages::{components, resolve};
use super::sessions::WebSession;
use super::{Peer, Web, WebError};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Extension, Json};
use serde::Deserialize;
use shelf_protocol::{
    ErrorCode, NodeId, NodeKind, RenameMode, Request, Response as Answer, MAX_BATCH,
};
use std::sync::Arc;

#[derive(Deserialize)]
pub struct Mkdir {
    dir: String,
    name: String,
}

#[derive(Deserialize)]
pub struct Names {
    dir: String,
    names: Vec<String>,
}

#[derive(Deserialize)]
pub struct Rename {
    dir: String,
    name: String,
    new_name: String,
}

#[derive(Deserialize)]
pub struct Move {
    dir: String,
    names: Vec<String>,
    /// The folder they go into, from the top of the store.
    to: String,
}

fn folder(web: &Web, session: &WebSession, path: &str) -> Result<NodeId, WebError> {
    let attr = resolve(web, session, &components(path)?)?;
    match attr.kind {
        NodeKind::Dir => Ok(attr.node),
        _ => Err(WebError::from(ErrorCode::NotDir)),
    }
}

/// A name from the browser: one component, never `.`/`..` or with a slash.
fn one_name(name: &str) -> Result<String, WebError> {
    match components(name)?.as_slice() {
        [n] if n == name => Ok(n.clone()),
        _ => Err(WebError::from(ErrorCode::InvalidName)),
    }
}

pub async fn mkdir(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(req): Json<Mkdir>,
) -> Response {
    super::api_change(web, peer, headers, move |web, session| {
        let parent = folder(web, session, &req.dir)?;
        session.call(
            &web.store,
            Request::Mkdir {
                parent,
                name: one_name(&req.name)?,
                mode: 0o755,
                id: None,
            },
        )?;
        Ok(())
    })
    .await
}

pub async fn rename(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(req): Json<Rename>,
) -> Response {
    super::api_change(web, peer, headers, move |web, session| {
        let parent = folder(web, session, &req.dir)?;
        session.call(
            &web.store,
            Request::Rename {
                parent,
                name: one_name(&req.name)?,
                new_parent: parent,
                new_name: one_name(&req.new_name)?,
                mode: RenameMode::NoReplace,
                expect: None,
            },
        )?;
        Ok(())
    })
    .await
}

pub async fn move_to(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(req): Json<Move>,
) -> Response {
    super::api_change(web, peer, headers, move |web, session| {
        let parent = folder(web, session, &req.dir)?;
        let target = folder(web, session, &req.to)?;
        for name in &req.names {
            let name = one_name(name)?;
            session.call(
                &web.store,
                Request::Rename {
                    parent,
                    name: name.clone(),
                    new_parent: target,
                    new_name: name,
                    mode: RenameMode::NoReplace,
                    expect: None,
                },
            )?;
        }
        Ok(())
    })
    .await
}

pub async fn delete(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(req): Json<Names>,
) -> Response {
    super::api_change(web, peer, headers, move |web, session| {
        let parent = folder(web, session, &req.dir)?;
        for name in &req.names {
            remove(web, session, parent, &one_name(name)?)?;
        }
        Ok(())
    })
    .await
}

/// Removes `name` from `parent`: a folder's content first, deepest first.
fn remove(web: &Web, session: &WebSession, parent: NodeId, name: &str) -> Result<(), WebError> {
    let attr = match session.call(
        &web.store,
        Request::Lookup {
            parent,
            name: name.to_string(),
        },
    )? {
        Answer::Attr(a) => a,
        _ => return Err(WebError::from(ErrorCode::Internal)),
    };
    if attr.kind == NodeKind::Dir {
        loop {
            let page = session.call(
                &web.store,
                Request::ReadDir {
                    dir: attr.node,
                    after: None,
                    limit: MAX_BATCH as u32,
                },
            )?;
            let Answer::DirPage { entries, .. } = page else {
                return Err(WebError::from(ErrorCode::Internal));
            };
            if entries.is_empty() {
                break;
            }
            for e in entries {
                remove(web, session, attr.node, &e.name)?;
            }
        }
        session.call(
            &web.store,
            Request::Rmdir {
                parent,
                name: name.to_string(),
                expect: None,
            },
        )?;
    } else {
        session.call(
            &web.store,
            Request::Unlink {
                parent,
                name: name.to_string(),
                expect: None,
            },
        )?;
    }
    Ok(())
}
