//! What a public link's visitor sees, without an account: `/s/TOKEN` opens the link (a
//! password form first when it has one), a file link offers its download, a download
//! link to a folder lists it (sub-folders, each file, the whole as a zip), and an upload
//! link ("file request") offers only a picker: nothing in its folder is shown or replaced.
//!
//! Every request opens the link again in the store ([`Store::open_link`]), so a revoked or
//! expired link stops at once; the store throttles guessing by address and writes each
//! opening and download to the owner's audit log. The visitor then acts through the
//! handler as the link's principal, so the one authorisation function limits it to the
//! link's file or folder. The password, once right, is remembered by a cookie scoped to
//! the link's path ([`super::sessions::WebSessions::unlock_tag`]).
//!
//! [`Store::open_link`]: crate::store::Store::open_link

use super::pages::{components, crumbs_under, dates, encode, encode_path, human_size, render};
use super::pages::{Crumb, ListQuery, Listed};
use super::sessions::WebSession;
use super::upload::{At, Start};
use super::{blocking, cookie, Peer, Web, WebError};
use crate::store::public_links::Key;
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use shelf_protocol::{ErrorCode, LinkAccess, LinkInfo, NodeKind};
use std::sync::Arc;

/// The cookie that remembers a link's password was given (one per link, by path).
const UNLOCK_COOKIE: &str = "shelf_link";
/// How long a given password is remembered.
const UNLOCK_SECS: u64 = 12 * 3600;

/// What the link page shows.
enum View {
    /// The password form (with why, after a wrong one).
    Password(Option<String>),
    /// One file to download.
    File { size: String },
    /// A folder's entries.
    Folder {
        crumbs: Vec<Crumb>,
        entries: Vec<Row>,
        zip: String,
        next: Option<String>,
    },
    /// The upload form of a file request.
    Drop { csrf: String },
    /// Why the link opens nothing.
    Gone(String),
}

struct Row {
    name: String,
    href: String,
    is_dir: bool,
    size: String,
    date: String,
    iso: String,
}

#[derive(Template)]
#[template(path = "link.html")]
struct LinkPage {
    title: String,
    base: String,
    view: View,
}

/// The link's page base (`/s/TOKEN`).
fn base(token: &str) -> String {
    format!("/s/{}", encode(token))
}

/// A page saying why the link opens nothing.
fn gone(status: StatusCode, why: &str) -> Response {
    let page = LinkPage {
        title: "Shared link".into(),
        base: String::new(),
        view: View::Gone(why.to_string()),
    };
    (status, render(&page)).into_response()
}

/// The store's refusal as the page a visitor sees.
fn refused(token: &str, e: WebError) -> Response {
    match e.0.code {
        ErrorCode::AuthRequired => password_form(token, StatusCode::UNAUTHORIZED, None),
        ErrorCode::AuthFailed => password_form(
            token,
            StatusCode::UNAUTHORIZED,
            Some("That password is not right.".into()),
        ),
        ErrorCode::NotFound => gone(
            StatusCode::NOT_FOUND,
            "This link does not exist, or its owner ended it.",
        ),
        ErrorCode::SessionExpired => gone(StatusCode::GONE, "This link has expired."),
        ErrorCode::Locked => gone(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many wrong links or passwords from your address. Try again later.",
        ),
        _ => e.into_response(),
    }
}

fn password_form(token: &str, status: StatusCode, why: Option<String>) -> Response {
    let page = LinkPage {
        title: "Shared link".into(),
        base: base(token),
        view: View::Password(why),
    };
    (status, render(&page)).into_response()
}

/// Opens the link `token` for this request: the visitor's session and what the link is.
async fn visit(
    web: &Arc<Web>,
    peer: Peer,
    headers: &HeaderMap,
    token: &str,
    audit: bool,
) -> Result<(Arc<WebSession>, LinkInfo), Response> {
    let unlocked = cookie(headers, UNLOCK_COOKIE).is_some_and(|c| web.sessions.unlocked(token, c));
    let w = web.clone();
    let t = token.to_string();
    let opened = blocking(move || {
        let key = if unlocked { Key::Unlocked } else { Key::None };
        w.store
            .open_link(&t, key, Some(peer.0), audit)
            .map_err(|e| e.to_wire())
    })
    .await
    .map_err(|e| refused(token, e))?;
    let info = opened.info.clone();
    Ok((Arc::new(WebSession::for_link(peer.0, opened, token)), info))
}

pub async fn open(
    state: State<Arc<Web>>,
    peer: Extension<Peer>,
    headers: HeaderMap,
    Path(token): Path<String>,
    query: Query<ListQuery>,
) -> Response {
    folder(state, peer, headers, Path((token, String::new())), query).await
}

/// The link's page: its file, its folder (or a folder below it), or its upload form.
pub async fn folder(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((token, path)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> Response {
    let (session, info) = match visit(&web, peer, &headers, &token, true).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let base = base(&token);
    let title = info.path.rsplit('/').next().unwrap_or_default().to_string();
    let view = match (info.access, info.kind) {
        (LinkAccess::Upload, _) => View::Drop {
            csrf: web.sessions.csrf(&session),
        },
        (LinkAccess::Download, NodeKind::Dir) => {
            let parts = match components(&path) {
                Ok(p) => p,
                Err(e) => return e.into_response(),
            };
            let w = web.clone();
            let p = parts.clone();
            let listed =
                blocking(move || super::pages::list(&w, &session, &p, q).map_err(|e| e.0)).await;
            let (entries, next) = match listed {
                Ok(Listed::Dir(e, n)) => (e, n),
                Ok(Listed::File) => {
                    return Redirect::to(&format!("{base}/dl/{}", encode_path(&parts)))
                        .into_response()
                }
                Err(e) => return e.into_response(),
            };
            let here = match parts.is_empty() {
                true => format!("{base}/"),
                false => format!("{base}/f/{}/", encode_path(&parts)),
            };
            View::Folder {
                crumbs: crumbs_under(&format!("{base}/f/"), &parts),
                entries: entries
                    .into_iter()
                    .map(|e| {
                        let is_dir = e.attr.kind == NodeKind::Dir;
                        let (date, iso) = dates(e.attr.mtime.secs);
                        let below = encode_path(&[parts.clone(), vec![e.name.clone()]].concat());
                        Row {
                            href: match is_dir {
                                true => format!("{base}/f/{below}/"),
                                false => format!("{base}/dl/{below}"),
                            },
                            size: if is_dir {
                                String::new()
                            } else {
                                human_size(e.attr.size)
                            },
                            name: e.name,
                            is_dir,
                            date,
                            iso,
                        }
                    })
                    .collect(),
                zip: match parts.is_empty() {
                    true => format!("{base}/zip"),
                    false => format!("{base}/zip/{}", encode_path(&parts)),
                },
                next: next.map(|after| format!("{here}?after={}", encode(&after))),
            }
        }
        (LinkAccess::Download, _) => {
            let w = web.clone();
            let size = blocking(move || {
                super::pages::resolve(&w, &session, &[])
                    .map(|a| a.size)
                    .map_err(|e| e.0)
            })
            .await;
            match size {
                Ok(n) => View::File {
                    size: human_size(n),
                },
                Err(e) => return e.into_response(),
            }
        }
    };
    render(&LinkPage { title, base, view })
}

#[derive(Deserialize)]
pub struct Unlock {
    password: String,
}

/// The password form's answer: on to the link with the cookie that remembers it.
pub async fn unlock(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    Path(token): Path<String>,
    Form(form): Form<Unlock>,
) -> Response {
    let w = web.clone();
    let t = token.clone();
    let opened = blocking(move || {
        w.store
            .open_link(&t, Key::Password(&form.password), Some(peer.0), true)
            .map(|_| ())
            .map_err(|e| e.to_wire())
    })
    .await;
    if let Err(e) = opened {
        return refused(&token, e);
    }
    let base = base(&token);
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!(
                    "{UNLOCK_COOKIE}={}; Path={base}; Max-Age={UNLOCK_SECS}; Secure; HttpOnly; SameSite=Strict",
                    web.sessions.unlock_tag(&token)
                ),
            ),
            (header::LOCATION, format!("{base}/")),
        ],
    )
        .into_response()
}

/// A file link's file, or a file in a folder link.
pub async fn download(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((token, path)): Path<(String, String)>,
) -> Response {
    let (session, info) = match visit(&web, peer, &headers, &token, true).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if info.access != LinkAccess::Download {
        return WebError::from(ErrorCode::NotFound).into_response();
    }
    let parts = match components(&path) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let w = web.clone();
    let s = session.clone();
    let p = parts.clone();
    let found = blocking(move || super::download::manifest(&w, &s, &p).map_err(|e| e.0)).await;
    let (node, size, chunks) = match found {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let name = parts
        .last()
        .cloned()
        .unwrap_or_else(|| info.path.rsplit('/').next().unwrap_or_default().to_string());
    super::download::respond(web, session, &headers, node, &name, size, chunks)
}

pub async fn download_file(
    state: State<Arc<Web>>,
    peer: Extension<Peer>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    download(state, peer, headers, Path((token, String::new()))).await
}

/// A folder link's folder (or one below it) as a zip.
pub async fn zip(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((token, path)): Path<(String, String)>,
) -> Response {
    let (session, info) = match visit(&web, peer, &headers, &token, true).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if info.access != LinkAccess::Download || info.kind != NodeKind::Dir {
        return WebError::from(ErrorCode::NotFound).into_response();
    }
    let parts = match components(&path) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let w = web.clone();
    let s = session.clone();
    let p = parts.clone();
    let dir = match blocking(move || super::pages::resolve(&w, &s, &p).map_err(|e| e.0)).await {
        Ok(a) if a.kind == NodeKind::Dir => a.node,
        Ok(_) => return WebError::from(ErrorCode::NotDir).into_response(),
        Err(e) => return e.into_response(),
    };
    let name = parts
        .last()
        .cloned()
        .unwrap_or_else(|| info.path.rsplit('/').next().unwrap_or_default().to_string());
    super::folder_zip::zip_response(web, session, dir, format!("{name}.zip"))
}

pub async fn zip_all(
    state: State<Arc<Web>>,
    peer: Extension<Peer>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    zip(state, peer, headers, Path((token, String::new()))).await
}

/// The session of an upload call through an upload link (with its CSRF header).
async fn drop_session(
    web: &Arc<Web>,
    peer: Peer,
    headers: &HeaderMap,
    token: &str,
) -> Result<Arc<WebSession>, Response> {
    let (session, info) = visit(web, peer, headers, token, false).await?;
    if info.access != LinkAccess::Upload {
        return Err(WebError::from(ErrorCode::ReadOnly).into_response());
    }
    if !super::upload::csrf_header_ok(web, &session, headers) {
        return Err((StatusCode::FORBIDDEN, "bad or missing CSRF token").into_response());
    }
    Ok(session)
}

pub async fn upload_start(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Json(req): Json<Start>,
) -> Response {
    match drop_session(&web, peer, &headers, &token).await {
        Ok(s) => super::upload::start_as(web, s, req, true).await,
        Err(r) => r,
    }
}

pub async fn upload_status(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((token, id)): Path<(String, String)>,
) -> Response {
    match drop_session(&web, peer, &headers, &token).await {
        Ok(s) => super::upload::status_as(&web, &s, id),
        Err(r) => r,
    }
}

pub async fn upload_put(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((token, id)): Path<(String, String)>,
    Query(at): Query<At>,
    body: Bytes,
) -> Response {
    match drop_session(&web, peer, &headers, &token).await {
        Ok(s) => super::upload::put_as(web, s, id, at, body).await,
        Err(r) => r,
    }
}

/// The end of an upload through a link: the file is made (under a free name) and the
/// owner's audit log says what came in.
pub async fn upload_finish(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((token, id)): Path<(String, String)>,
) -> Response {
    let session = match drop_session(&web, peer, &headers, &token).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let ctx = session.session.ctx();
    match super::upload::finish_as(web.clone(), session, id).await {
        Ok(f) => {
            if let Some(ctx) = ctx {
                // No name: admins read the log, and they do not see users' file names.
                let what = format!("uploaded a file of {} bytes", f.size);
                let w = web.clone();
                let _ = blocking(move || {
                    w.store.audit_link(&ctx, peer.0, &what);
                    Ok(())
                })
                .await;
            }
            Json(f).into_response()
        }
        Err(e) => e.into_response(),
    }
}
