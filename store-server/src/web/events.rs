//! Live events for the pages: `GET /api/events` is a Server-Sent Events stream of the
//! account's change feed (`handler::subscribe`, the same feed mounts follow), one JSON
//! `Change` per event, with a comment every 15 s to keep proxies from closing it. Folder
//! pages listen and offer to refresh when something in them changed on another device.

use super::pages::signed_in;
use super::{Peer, Web};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn events(
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
    // Live changes only: a page shows what happens while it is open.
    let live = match super::blocking(move || {
        crate::handler::subscribe(&w.store, &s.session, None).map(|sub| sub.live)
    })
    .await
    {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let stream = futures_util::stream::unfold(live, |mut live| async move {
        loop {
            let item = match tokio::time::timeout(KEEP_ALIVE, live.recv()).await {
                Err(_) => Bytes::from_static(b": keep-alive\n\n"),
                Ok(Ok(change)) => match serde_json::to_string(&change) {
                    Ok(json) => Bytes::from(format!("data: {json}\n\n")),
                    Err(_) => continue,
                },
                // Missed some: the page refreshes what it shows anyway.
                Ok(Err(RecvError::Lagged(_))) => Bytes::from_static(b"data: {\"lagged\":true}\n\n"),
                Ok(Err(RecvError::Closed)) => return None,
            };
            return Some((Ok::<_, std::io::Error>(item), live));
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
