//! What this server hears from the other servers of a shared store (PostgreSQL metadata,
//! several `shelf-server run` processes): the feed entries they write, so its own
//! subscribers get them within the notification's round trip, and their changes to what
//! it caches (grants of shares and links, places, sessions).
//!
//! Servers tell each other through the database ([`crate::kv::Db::notify`], `LISTEN`/
//! `NOTIFY` on PostgreSQL): a feed entry's notice rides with the transaction that writes
//! it, so it is heard only once the entry can be read. A notice names its server, and a
//! server ignores its own. When the listening connection comes back after a break
//! (notices sent meanwhile are lost), the server catches up from the database: every
//! subscribed account's feed, the grants, and an empty places cache. With sled (one
//! process) nothing is ever heard and none of this runs.
//!
//! Garbage collection must not drop a chunk a commit on any server has checked and is
//! about to name. Each server holds the *gate* (a database-wide lock) shared while it may
//! commit; a collection takes the *turnstile* alone, tells every server, and waits for the
//! gate alone: each server waits for its own commits to end (its `gc_lock`), lets go of
//! the gate, and queues at the turnstile, so its commits wait until the collection is over
//! ([`Store::pause_other_servers`]).

use super::Store;
use crate::error::{Result, StoreError};
use crate::kv::{JobLock, Notice};
use shelf_protocol::sync::{LockOrRecover, RwLockOrRecover};
use std::sync::Arc;
use std::time::Duration;

/// Held shared by every server that may commit; alone by a garbage collection.
const GC_GATE: &str = "shelf-gc-gate";
/// Taken alone by a collection before it asks; servers come back to the gate through it.
const GC_TURNSTILE: &str = "shelf-gc-turnstile";
/// How long a collection waits for every server to step aside before it gives up.
const GC_WAIT: Duration = Duration::from_secs(60);

/// The channel of feed entries: `ACCOUNT UPTO RENAMES SERVER`.
pub const FEED: &str = "shelf_feed";
/// The channel of cache changes: `WHAT SERVER`.
pub const CACHE: &str = "shelf_cache";

/// A feed entry's notice: the account, its last position, whether it moved or removed
/// names (places cached elsewhere may be stale), and who wrote it.
pub(crate) fn feed_notice(account: u64, upto: u64, renames: bool, server: u64) -> String {
    format!("{account} {upto} {} {server}", u8::from(renames))
}

/// Cached state another server changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheChange {
    /// Shares or public links: the grant index.
    Grants,
    /// Sessions ended or their rights changed: connections check theirs again now.
    Sessions,
    /// A garbage collection waits for every server's commits to pause.
    Gc,
}

impl CacheChange {
    fn word(self) -> &'static str {
        match self {
            CacheChange::Grants => "grants",
            CacheChange::Sessions => "sessions",
            CacheChange::Gc => "gc",
        }
    }

    fn from_word(w: &str) -> Option<CacheChange> {
        match w {
            "grants" => Some(CacheChange::Grants),
            "sessions" => Some(CacheChange::Sessions),
            "gc" => Some(CacheChange::Gc),
            _ => None,
        }
    }
}

/// A notice, parsed (what does not parse is ignored: it is not from this version).
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    Feed {
        account: u64,
        upto: u64,
        renames: bool,
        server: u64,
    },
    Cache {
        what: CacheChange,
        server: u64,
    },
}

fn parse(channel: &str, payload: &str) -> Option<Heard> {
    let mut words = payload.split(' ');
    match channel {
        FEED => {
            let account = words.next()?.parse().ok()?;
            let upto = words.next()?.parse().ok()?;
            let renames = words.next()? == "1";
            let server = words.next()?.parse().ok()?;
            Some(Heard::Feed {
                account,
                upto,
                renames,
                server,
            })
        }
        CACHE => {
            let what = CacheChange::from_word(words.next()?)?;
            let server = words.next()?.parse().ok()?;
            Some(Heard::Cache { what, server })
        }
        _ => None,
    }
}

impl Store {
    /// Tells the other servers of a shared store that `what` changed here (nothing with
    /// sled). A failure is logged: they catch up within a second for sessions, and at
    /// their next reconnect for grants.
    pub(crate) fn tell_servers(&self, what: CacheChange) {
        if !self.db.is_shared() {
            return;
        }
        let payload = format!("{} {}", what.word(), self.server_id);
        if let Err(e) = self.db.notify(CACHE, &payload) {
            tracing::warn!(error = %e, ?what, "cannot tell the other servers");
        }
    }

    /// Starts hearing the other servers of a shared store (nothing with sled): a thread of
    /// its own applies what it hears, so the database driver never waits on the store.
    pub fn hear_other_servers(self: &Arc<Self>) -> std::io::Result<()> {
        if !self.db.is_shared() {
            return Ok(());
        }
        self.enter_gc_gate().map_err(std::io::Error::other)?;
        let (tx, rx) = std::sync::mpsc::channel::<Notice>();
        self.db.listen(
            &[FEED, CACHE],
            Box::new(move |n| {
                let _ = tx.send(n);
            }),
        );
        let store = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("shelf-cluster".into())
            .spawn(move || {
                while let Ok(notice) = rx.recv() {
                    let Some(store) = store.upgrade() else { return };
                    store.heard(notice);
                }
            })?;
        Ok(())
    }

    fn heard(self: &Arc<Self>, notice: Notice) {
        match notice {
            Notice::Listening => {
                tracing::info!("listening to the other servers of the store");
                // The gate's connection may have gone with the listener's.
                self.step_aside_for_gc();
                self.places.clear();
                if let Err(e) = self.reload_grants() {
                    tracing::warn!(error = %e, "cannot read the grants again");
                }
                self.sessions_changed_elsewhere();
                for account in self.subscribed_accounts() {
                    self.heard_feed(account, u64::MAX);
                }
            }
            Notice::Message { channel, payload } => match parse(&channel, &payload) {
                Some(Heard::Feed { server, .. }) | Some(Heard::Cache { server, .. })
                    if server == self.server_id => {}
                Some(Heard::Feed {
                    account,
                    upto,
                    renames,
                    ..
                }) => {
                    if renames {
                        self.places.clear();
                    }
                    self.heard_feed(account, upto);
                }
                Some(Heard::Cache {
                    what: CacheChange::Grants,
                    ..
                }) => {
                    if let Err(e) = self.reload_grants() {
                        tracing::warn!(error = %e, "cannot read the grants again");
                    }
                }
                Some(Heard::Cache {
                    what: CacheChange::Sessions,
                    ..
                }) => self.sessions_changed_elsewhere(),
                Some(Heard::Cache {
                    what: CacheChange::Gc,
                    ..
                }) => self.step_aside_for_gc(),
                None => tracing::debug!(channel, payload, "unknown notice"),
            },
        }
    }
}

impl Store {
    /// Holds the gate shared (this server may commit), coming in through the turnstile so
    /// as never to get ahead of a collection that waits for it.
    fn enter_gc_gate(&self) -> Result<()> {
        let turnstile = self.db.lock(GC_TURNSTILE, true, None)?;
        let gate = self.db.lock(GC_GATE, true, None)?;
        drop(turnstile);
        *self.gc_gate.lock_or_recover() = gate;
        Ok(())
    }

    /// Another server wants to collect garbage (or the gate's connection may be gone): on
    /// a thread of its own, waits for this server's commits to end, lets go of the gate and
    /// takes it again once the collection is over; this server's commits wait meanwhile.
    fn step_aside_for_gc(self: &Arc<Self>) {
        let store = self.clone();
        let spawned = std::thread::Builder::new()
            .name("shelf-gc-gate".into())
            .spawn(move || {
                let _no_commits = store.gc_lock.write_or_recover();
                store.gc_gate.lock_or_recover().take();
                if let Err(e) = store.enter_gc_gate() {
                    tracing::error!(error = %e, "cannot take the garbage-collection gate again");
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot step aside for a garbage collection");
        }
    }

    /// Pauses the commits of every other server of a shared store (nothing to do with
    /// sled) until the guard is dropped. Call it holding `gc_lock` alone. Refused if a
    /// server did not step aside within a minute.
    pub(crate) fn pause_other_servers(&self) -> Result<GcPause<'_>> {
        if !self.db.is_shared() {
            return Ok(GcPause {
                store: self,
                held: None,
            });
        }
        let Some(turnstile) = self.db.lock(GC_TURNSTILE, false, Some(GC_WAIT))? else {
            return Err(StoreError::ServersBusy);
        };
        self.gc_gate.lock_or_recover().take();
        self.tell_servers(CacheChange::Gc);
        match self.db.lock(GC_GATE, false, Some(GC_WAIT))? {
            Some(gate) => Ok(GcPause {
                store: self,
                held: Some((turnstile, gate)),
            }),
            None => {
                drop(turnstile);
                self.enter_gc_gate()?;
                Err(StoreError::ServersBusy)
            }
        }
    }
}

/// Other servers' commits are paused while it lives ([`Store::pause_other_servers`]).
pub(crate) struct GcPause<'a> {
    store: &'a Store,
    held: Option<(JobLock, JobLock)>,
}

impl Drop for GcPause<'_> {
    fn drop(&mut self) {
        if let Some((turnstile, gate)) = self.held.take() {
            drop(gate);
            drop(turnstile);
            if let Err(e) = self.store.enter_gc_gate() {
                tracing::error!(error = %e, "cannot take the garbage-collection gate again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_read_back_as_written_and_anything_else_is_ignored() {
        assert_eq!(
            parse(FEED, &feed_notice(7, 1234, true, 99)),
            Some(Heard::Feed {
                account: 7,
                upto: 1234,
                renames: true,
                server: 99
            })
        );
        assert_eq!(
            parse(CACHE, "grants 5"),
            Some(Heard::Cache {
                what: CacheChange::Grants,
                server: 5
            })
        );
        assert_eq!(parse(FEED, "7 x 0 1"), None);
        assert_eq!(parse(CACHE, "everything 5"), None);
        assert_eq!(parse("other", "grants 5"), None);
    }
}
