//! The HTML pages: sign in, sign out, folder listings. Templates live in
//! `store-server/templates/` and are compiled in (askama escapes every value, so a file
//! named `<img src=x onerror=alert(1)>.jpg` shows as text).

use super::sessions::{WebSession, COOKIE};
use super::{blocking, cookie, Peer, Web, WebError};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use shelf_protocol::{Attr, DirEntry, ErrorCode, NodeKind, Request, Response as Answer};
use std::sync::Arc;

/// Entries on one page of a listing sorted by name.
pub const PAGE: u32 = 200;
/// Most entries a listing sorted by size or date reads (the whole folder up to this).
pub const MAX_SORTED: usize = 50_000;
/// The cookie that ties the sign-in form to its browser (double submit against login CSRF).
const LOGIN_COOKIE: &str = "shelf_login";

/// The signed-in session of a request, or a redirect to the sign-in page.
pub async fn signed_in(
    web: &Arc<Web>,
    peer: Peer,
    headers: &HeaderMap,
) -> Result<Arc<WebSession>, Response> {
    let Some(token) = cookie(headers, COOKIE).map(str::to_string) else {
        return Err(Redirect::to("/login").into_response());
    };
    let w = web.clone();
    match tokio::task::spawn_blocking(move || w.sessions.get(&w.store, peer.0, &token)).await {
        Ok(Some(s)) => Ok(s),
        _ => Err((
            [(
                header::SET_COOKIE,
                format!("{COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict"),
            )],
            Redirect::to("/login"),
        )
            .into_response()),
    }
}

/// The signed-in session and the path components of a request to a `…/{*path}` route,
/// as an extractor: a handler that takes it never runs without both (the sign-in
/// redirect, or 400 for a path with `.` or `..`, is the answer instead).
pub struct SignedInPath {
    pub session: Arc<WebSession>,
    pub parts: Vec<String>,
}

impl axum::extract::FromRequestParts<Arc<Web>> for SignedInPath {
    type Rejection = Response;

    async fn from_request_parts(
        req: &mut axum::http::request::Parts,
        web: &Arc<Web>,
    ) -> Result<SignedInPath, Response> {
        let Path(path) = Path::<String>::from_request_parts(req, web)
            .await
            .map_err(IntoResponse::into_response)?;
        let Some(peer) = req.extensions.get::<Peer>().copied() else {
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        let session = signed_in(web, peer, &req.headers).await?;
        let parts = components(&path).map_err(IntoResponse::into_response)?;
        Ok(SignedInPath { session, parts })
    }
}

pub async fn home() -> Redirect {
    Redirect::to("/files/")
}

pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../static/app.css"),
    )
}

pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../static/app.js"),
    )
}

pub async fn history_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../static/history.js"),
    )
}

pub fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "web: template failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
    user: String,
    csrf: String,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    match getrandom::getrandom(&mut b) {
        Ok(()) => hex::encode(b),
        Err(_) => String::new(),
    }
}

fn login_form(status: StatusCode, user: String, error: Option<String>) -> Response {
    let csrf = random_hex(16);
    (
        status,
        [(
            header::SET_COOKIE,
            format!("{LOGIN_COOKIE}={csrf}; Path=/login; Secure; HttpOnly; SameSite=Strict"),
        )],
        render(&LoginPage { error, user, csrf }),
    )
        .into_response()
}

pub async fn login_page() -> Response {
    login_form(StatusCode::OK, String::new(), None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    csrf: String,
}

pub async fn login(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || expected != form.csrf {
        return login_form(
            StatusCode::FORBIDDEN,
            form.user,
            Some("The sign-in form expired; please try again.".into()),
        );
    }
    let w = web.clone();
    let user = form.user.clone();
    let result = tokio::task::spawn_blocking(move || {
        w.sessions.login(&w.store, peer.0, &user, &form.password)
    })
    .await;
    match result {
        Ok(Ok(session)) => (
            [(
                header::SET_COOKIE,
                format!(
                    "{COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict",
                    session.token
                ),
            )],
            Redirect::to("/files/"),
        )
            .into_response(),
        Ok(Err(e)) => {
            let (status, msg) = match e.code {
                ErrorCode::AuthFailed => (
                    StatusCode::UNAUTHORIZED,
                    "Wrong user name or password.".to_string(),
                ),
                ErrorCode::Locked => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("Too many failed sign-ins: {}.", e.message),
                ),
                _ => (StatusCode::BAD_REQUEST, e.message),
            };
            login_form(status, form.user, Some(msg))
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let session = match signed_in(&web, peer, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !web.sessions.csrf_ok(&session, &form.csrf) {
        return (StatusCode::FORBIDDEN, "bad or missing CSRF token").into_response();
    }
    let w = web.clone();
    let _ = tokio::task::spawn_blocking(move || w.sessions.logout(&w.store, &session)).await;
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict"),
        )],
        Redirect::to("/login"),
    )
        .into_response()
}

/// The components of a path below the top of the store; `.`, `..` and empty parts other
/// than a trailing slash are refused (the store checks names again).
pub fn components(path: &str) -> Result<Vec<String>, WebError> {
    let mut out = Vec::new();
    for part in path.split('/') {
        match part {
            "" => continue,
            "." | ".." => return Err(WebError::from(ErrorCode::InvalidName)),
            p => out.push(p.to_string()),
        }
    }
    Ok(out)
}

/// Looks a path up from the top of the session's store, one name at a time.
pub fn resolve(web: &Web, session: &WebSession, parts: &[String]) -> Result<Attr, WebError> {
    let mut attr = match session.call(&web.store, Request::GetAttr { node: session.root })? {
        Answer::Attr(a) => a,
        _ => return Err(WebError::from(ErrorCode::Internal)),
    };
    for name in parts {
        attr = match session.call(
            &web.store,
            Request::Lookup {
                parent: attr.node,
                name: name.clone(),
            },
        )? {
            Answer::Attr(a) => a,
            _ => return Err(WebError::from(ErrorCode::Internal)),
        };
    }
    Ok(attr)
}

/// Percent-encodes one path component for a URL.
pub fn encode(part: &str) -> String {
    let mut s = String::with_capacity(part.len());
    for b in part.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                s.push(b as char)
            }
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

pub fn encode_path(parts: &[String]) -> String {
    parts
        .iter()
        .map(|p| encode(p))
        .collect::<Vec<_>>()
        .join("/")
}

pub struct Crumb {
    pub name: String,
    pub href: String,
}

/// Breadcrumbs down to the folder at `parts`.
pub fn crumbs(parts: &[String]) -> Vec<Crumb> {
    crumbs_under("/files/", parts)
}

/// Breadcrumbs down to the folder at `parts`, whose pages are below `base`.
pub fn crumbs_under(base: &str, parts: &[String]) -> Vec<Crumb> {
    (0..parts.len())
        .map(|i| Crumb {
            name: parts[i].clone(),
            href: format!("{base}{}/", encode_path(&parts[..=i])),
        })
        .collect()
}

struct Row {
    name: String,
    href: String,
    /// The photo's thumbnail (grid view).
    thumb: Option<String>,
    /// The file's versions page (files only).
    history: String,
    is_dir: bool,
    class: &'static str,
    size: String,
    date: String,
    iso: String,
}

#[derive(Template)]
#[template(path = "browse.html")]
struct BrowsePage {
    title: String,
    /// This folder as a zip (not for the top of the store).
    zip: Option<String>,
    /// This folder's deleted files.
    deleted: String,
    /// The folder, from the top of the store (for the page's script).
    dir: String,
    user: String,
    csrf: String,
    crumbs: Vec<Crumb>,
    entries: Vec<Row>,
    next: Option<String>,
    /// Shown as a grid of pictures.
    grid: bool,
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    sort: Option<String>,
    after: Option<String>,
    /// `grid` (pictures) or `list`; photo folders open as a grid.
    view: Option<String>,
}

/// Sizes as people read them: 1.5 KiB, 3.2 MiB.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

pub fn dates(secs: i64) -> (String, String) {
    match jiff::Timestamp::from_second(secs) {
        Ok(t) => (
            t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
            t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        ),
        Err(_) => (String::new(), String::new()),
    }
}

pub async fn browse_root(
    state: State<Arc<Web>>,
    peer: Extension<Peer>,
    headers: HeaderMap,
    query: Query<ListQuery>,
) -> Response {
    browse(state, peer, headers, Path(String::new()), query).await
}

pub async fn browse(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(path): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    let session = match signed_in(&web, peer, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let parts = match components(&path) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let grid = match q.view.as_deref() {
        Some("grid") => true,
        Some(_) => false,
        None => parts.first().is_some_and(|p| p == "photos"),
    };
    let w = web.clone();
    let s = session.clone();
    let p = parts.clone();
    let listed = blocking(move || list(&w, &s, &p, q).map_err(|e| e.0)).await;
    let (entries, next) = match listed {
        Ok(Listed::Dir(e, n)) => (e, n),
        Ok(Listed::File) => {
            return Redirect::to(&format!("/dl/{}", encode_path(&parts))).into_response()
        }
        Err(e) => return e.into_response(),
    };
    let base = format!("/files/{}", encode_path(&parts));
    let base = if parts.is_empty() {
        "/files/".to_string()
    } else {
        format!("{base}/")
    };
    let crumbs = crumbs(&parts);
    let rows = entries
        .into_iter()
        .map(|e| {
            let is_dir = e.attr.kind == NodeKind::Dir;
            let (date, iso) = dates(e.attr.mtime.secs);
            Row {
                href: match is_dir {
                    true => format!("{base}{}/", encode(&e.name)),
                    false => super::photos::open_href(&parts, &e.name),
                },
                thumb: match is_dir {
                    true => None,
                    false => super::photos::thumb_href(&parts, &e.name, e.attr.version),
                },
                history: match is_dir {
                    true => String::new(),
                    false => super::history::history_href(&parts, &e.name),
                },
                class: if is_dir { "dir" } else { "file" },
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
        .collect();
    render(&BrowsePage {
        title: parts.last().cloned().unwrap_or_else(|| "Home".into()),
        dir: parts.join("/"),
        deleted: super::history::deleted_href(&parts),
        zip: (!parts.is_empty()).then(|| format!("/zip/{}/", encode_path(&parts))),
        user: session.user.clone(),
        csrf: web.sessions.csrf(&session),
        crumbs,
        entries: rows,
        next: next.map(|after| format!("{base}?after={}", encode(&after))),
        grid,
    })
}

pub enum Listed {
    /// Entries of a folder, and the name to continue after when more follow.
    Dir(Vec<DirEntry>, Option<String>),
    File,
}

fn read_page(
    web: &Web,
    session: &WebSession,
    dir: shelf_protocol::NodeId,
    after: Option<String>,
    limit: u32,
) -> Result<(Vec<DirEntry>, bool), WebError> {
    match session.call(&web.store, Request::ReadDir { dir, after, limit })? {
        Answer::DirPage { entries, more } => Ok((entries, more)),
        _ => Err(WebError::from(ErrorCode::Internal)),
    }
}

pub fn list(
    web: &Web,
    session: &WebSession,
    parts: &[String],
    q: ListQuery,
) -> Result<Listed, WebError> {
    let attr = resolve(web, session, parts)?;
    if attr.kind != NodeKind::Dir {
        return Ok(Listed::File);
    }
    match q.sort.as_deref() {
        Some(key @ ("size" | "date")) => {
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let (page, more) = read_page(web, session, attr.node, after, 1024)?;
                after = page.last().map(|e| e.name.clone());
                all.extend(page);
                if !more || after.is_none() || all.len() >= MAX_SORTED {
                    break;
                }
            }
            match key {
                "size" => all.sort_by_key(|e| std::cmp::Reverse(e.attr.size)),
                _ => {
                    all.sort_by_key(|e| std::cmp::Reverse((e.attr.mtime.secs, e.attr.mtime.nanos)))
                }
            }
            Ok(Listed::Dir(all, None))
        }
        _ => {
            let (mut page, more) = read_page(web, session, attr.node, q.after, PAGE)?;
            let next = more.then(|| page.last().map(|e| e.name.clone())).flatten();
            // Folders first, as file managers show them.
            page.sort_by(|a, b| {
                (a.attr.kind != NodeKind::Dir, &a.name)
                    .cmp(&(b.attr.kind != NodeKind::Dir, &b.name))
            });
            Ok(Listed::Dir(page, next))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_refuse_dot_components_and_encode_every_byte_outside_the_safe_set() {
        assert!(components("a/../b").is_err());
        assert!(components("./a").is_err());
        assert_eq!(
            components("/a//b/").ok(),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(encode("a b/ü<"), "a%20b%2F%C3%BC%3C");
    }

    #[test]
    fn sizes_read_like_a_file_manager() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }
}
