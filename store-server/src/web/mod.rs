//! The web door: an HTTPS server (`shelf-server run --web ADDR`) with pages for signing in,
//! browsing and downloading. It is another door onto the store: every page turns into
//! protocol [`Request`](shelf_protocol::Request)s run by [`crate::handler::handle`] for the
//! browser's session, so the one authorisation function and the store's own checks decide
//! what a browser may see and do; nothing here decides it.
//!
//! * [`sessions`] — sign-in (a device login), cookies, CSRF tokens.
//! * [`pages`] — the HTML pages (askama templates under `store-server/templates/`).
//! * [`account`] — the account page (storage, devices) and search by name.
//! * [`admin`] — the admin console (accounts, audit log).
//! * [`dav`] — WebDAV under `/dav/` (app passwords; the `dav-server` crate over the store).
//! * [`download`] — file downloads with HTTP ranges.
//! * [`upload`] — resumable uploads through the chunk and commit path.
//! * [`edit`] — new folder, rename, move, delete.
//! * [`history`] — versions, deleted files, restores.
//! * [`events`] — the change feed pushed to pages (Server-Sent Events).
//! * [`folder_zip`] — a folder as one streamed zip.
//! * [`shares`] — sharing with other users, and making public links.
//! * [`photos`] — thumbnails, the photo grid's pictures, the photo and video viewer.
//! * [`public_links`] — what a public link's visitor sees (no account).
//!
//! Connections: TLS 1.3 only (the server's certificate), HTTP/1.1 by hyper, a handshake
//! timeout and a connection limit like the protocol listener's. Every answer carries
//! security headers (a strict Content-Security-Policy, no framing, no sniffing).

pub mod account;
pub mod admin;
pub mod dav;
pub mod dav_locks;
pub mod dav_writer;
pub mod download;
pub mod edit;
pub mod events;
pub mod folder_zip;
pub mod history;
pub mod pages;
pub mod photos;
pub mod public_links;
pub mod sessions;
pub mod shares;
pub mod upload;

use crate::store::Store;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shelf_protocol::{ErrorCode, WireError};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// Most simultaneous browser connections.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time a browser has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every page handler shares.
pub struct Web {
    pub store: Arc<Store>,
    pub sessions: sessions::WebSessions,
    pub uploads: upload::Uploads,
    pub thumbnail_makers: photos::Makers,
    /// WebDAV ([`dav`]): one handler per account (its own locks).
    pub dav: dav::Handlers,
}

/// The address of the browser a request came from.
#[derive(Clone, Copy)]
pub struct Peer(pub IpAddr);

/// The router: every route of the web app.
pub fn router(web: Arc<Web>) -> axum::Router {
    use axum::routing::{any, get, post};
    axum::Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/files", get(pages::home))
        .route("/files/", get(pages::browse_root))
        .route("/files/{*path}", get(pages::browse))
        .route("/dl/{*path}", get(download::download))
        .route("/zip/{*path}", get(folder_zip::download_folder))
        .route("/thumb/{*path}", get(photos::thumbnail))
        .route("/view/{*path}", get(photos::view))
        .route("/static/app.css", get(pages::stylesheet))
        .route("/static/app.js", get(pages::script))
        .route("/api/upload", post(upload::start))
        .route(
            "/api/upload/{id}",
            get(upload::status)
                .put(upload::put)
                .layer(axum::extract::DefaultBodyLimit::max(upload::MAX_PIECE)),
        )
        .route("/api/upload/{id}/finish", post(upload::finish))
        .route("/history/{*path}", get(history::versions))
        .route("/deleted/", get(history::deleted_root))
        .route("/deleted/{*path}", get(history::deleted))
        .route("/version/{number}/{*path}", get(history::download_version))
        .route("/api/restore", post(history::restore))
        .route("/static/history.js", get(pages::history_script))
        .route("/shares", get(shares::list))
        .route("/api/share", post(shares::share))
        .route("/api/unshare", post(shares::unshare))
        .route("/api/link", post(shares::create_link))
        .route("/api/unlink", post(shares::revoke_link))
        .route("/s/{token}", get(public_links::open))
        .route("/s/{token}/", get(public_links::open))
        .route("/s/{token}/f/{*path}", get(public_links::folder))
        .route("/s/{token}/unlock", post(public_links::unlock))
        .route("/s/{token}/dl", get(public_links::download_file))
        .route("/s/{token}/dl/{*path}", get(public_links::download))
        .route("/s/{token}/zip", get(public_links::zip_all))
        .route("/s/{token}/zip/{*path}", get(public_links::zip))
        .route("/s/{token}/api/upload", post(public_links::upload_start))
        .route(
            "/s/{token}/api/upload/{id}",
            get(public_links::upload_status)
                .put(public_links::upload_put)
                .layer(axum::extract::DefaultBodyLimit::max(upload::MAX_PIECE)),
        )
        .route(
            "/s/{token}/api/upload/{id}/finish",
            post(public_links::upload_finish),
        )
        .route("/api/events", get(events::events))
        .route("/admin", get(admin::page))
        .route("/api/admin", post(admin::change))
        .route("/account", get(account::account))
        .route("/api/revoke", post(account::revoke))
        .route("/api/app-password", post(account::add_app_password))
        .route(
            "/api/app-password/revoke",
            post(account::revoke_app_password),
        )
        .route("/search", get(account::search))
        .route("/api/mkdir", post(edit::mkdir))
        .route("/api/rename", post(edit::rename))
        .route("/api/move", post(edit::move_to))
        .route("/api/delete", post(edit::delete))
        .route("/dav", any(dav::serve))
        .route("/dav/", any(dav::serve))
        .route("/dav/{*path}", any(dav::serve))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(web)
}

/// Serves the web app on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    store: Arc<Store>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // The protocol listener's config, plus ALPN so browsers know to speak HTTP/1.1.
    let mut config = (*tls).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let sessions = sessions::WebSessions::new()?;
    let web = Arc::new_cyclic(|me| Web {
        store,
        sessions,
        uploads: upload::Uploads::default(),
        thumbnail_makers: photos::Makers::default(),
        dav: dav::Handlers::new(me.clone()),
    });
    let app = router(web);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.map_err(std::io::Error::other)?,
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "web: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone().layer(axum::Extension(Peer(peer.ip())));
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "web: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let _counted = crate::metrics::Connected::new("web");
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "web: connection ended");
                    }
                }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
            drop(permit);
        });
    }
    Ok(())
}

/// Adds the headers every answer carries.
async fn security_headers(req: Request<axum::body::Body>, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, name: header::HeaderName, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self'; media-src 'self'; \
         script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
         base-uri 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(
        h,
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000; includeSubDomains",
    );
    set(h, header::CACHE_CONTROL, "no-store");
    resp
}

/// A store error as a page: status by kind, the store's message as plain text.
pub struct WebError(pub WireError);

impl From<WireError> for WebError {
    fn from(e: WireError) -> WebError {
        WebError(e)
    }
}

impl From<ErrorCode> for WebError {
    fn from(code: ErrorCode) -> WebError {
        WebError(WireError::from(code))
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if matches!(
            self.0.code,
            ErrorCode::AuthRequired | ErrorCode::SessionExpired
        ) {
            // Signed out meanwhile (revoked, expired): to the sign-in form.
            return (
                [(
                    header::SET_COOKIE,
                    format!(
                        "{}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict",
                        sessions::COOKIE
                    ),
                )],
                axum::response::Redirect::to("/login"),
            )
                .into_response();
        }
        let status = match self.0.code {
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::PermissionDenied | ErrorCode::ReadOnly => StatusCode::FORBIDDEN,
            ErrorCode::AuthRequired | ErrorCode::AuthFailed | ErrorCode::SessionExpired => {
                StatusCode::UNAUTHORIZED
            }
            ErrorCode::Locked => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::InvalidArgument | ErrorCode::InvalidName => StatusCode::BAD_REQUEST,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, self.0.message).into_response()
    }
}

/// Runs blocking store work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WireError> + Send + 'static,
) -> Result<T, WebError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(WebError),
        Err(_) => Err(WebError::from(ErrorCode::Internal)),
    }
}

/// A page's store work: the signed-in session (else the answer that sends to the
/// sign-in form), then `f` on the blocking pool.
pub async fn page_data<T: Send + 'static>(
    web: &Arc<Web>,
    peer: Peer,
    headers: &HeaderMap,
    f: impl FnOnce(&Web, &sessions::WebSession) -> Result<T, WireError> + Send + 'static,
) -> Result<(Arc<sessions::WebSession>, T), Response> {
    let session = pages::signed_in(web, peer, headers).await?;
    let w = web.clone();
    let s = session.clone();
    let got = blocking(move || f(&w, &s))
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((session, got))
}

/// A change through the API: the signed-in session with its CSRF header, `f` on the
/// blocking pool, `{"ok":true}` or the error.
pub async fn api_change(
    web: Arc<Web>,
    peer: Peer,
    headers: HeaderMap,
    f: impl FnOnce(&Web, &sessions::WebSession) -> Result<(), WebError> + Send + 'static,
) -> Response {
    api_answer(web, peer, headers, move |w, s| {
        f(w, s).map(|()| serde_json::json!({ "ok": true }))
    })
    .await
}

/// [`api_change`] whose answer is what `f` returns, as JSON.
pub async fn api_answer<T: serde::Serialize + Send + 'static>(
    web: Arc<Web>,
    peer: Peer,
    headers: HeaderMap,
    f: impl FnOnce(&Web, &sessions::WebSession) -> Result<T, WebError> + Send + 'static,
) -> Response {
    let session = match upload::api_session(&web, peer, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let w = web.clone();
    match blocking(move || f(&w, &session).map_err(|e| e.0)).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A cookie's value from the request headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
