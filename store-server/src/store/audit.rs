//! The audit log and alerts.
//!
//! The `audit` tree is append-only: seq (BE) → account (BE; 0 for the server itself) ‖
//! [`AuditRec`] sealed with the server's key (account 0's), so it outlives deleted accounts. It records logins, failed logins, lockouts, account and role
//! changes, shares, deletions, revoked devices and every alert. Entries never carry file
//! names or content (an admin reads the log and must not learn other users' files).
//!
//! An alert ([`Store::alert`]) is also written to the change feed of the account it concerns
//! and of every admin, so `shelf events` shows it to both at once.

use super::Store;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use shelf_protocol::sync::LockOrRecover;
use shelf_protocol::{AlertClass, Change, ChangeKind, Role, Timestamp};

/// What an audit entry records.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum AuditKind {
    Login,
    LoginFailed,
    Locked,
    UserAdded,
    UserDeleted,
    RoleChanged,
    PasswordChanged,
    Shared,
    Unshared,
    Deleted,
    DeviceRevoked,
    Alert(AlertClass),
    LinkCreated,
    LinkRevoked,
    LinkOpened,
    LinkRefused,
    RetentionChanged,
    ConflictPolicyChanged,
    AppPasswordAdded,
    AppPasswordRevoked,
}

impl std::fmt::Display for AuditKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditKind::Login => f.write_str("login"),
            AuditKind::LoginFailed => f.write_str("login-failed"),
            AuditKind::Locked => f.write_str("locked"),
            AuditKind::UserAdded => f.write_str("user-added"),
            AuditKind::UserDeleted => f.write_str("user-deleted"),
            AuditKind::RoleChanged => f.write_str("role-changed"),
            AuditKind::PasswordChanged => f.write_str("password-changed"),
            AuditKind::Shared => f.write_str("shared"),
            AuditKind::Unshared => f.write_str("unshared"),
            AuditKind::Deleted => f.write_str("deleted"),
            AuditKind::DeviceRevoked => f.write_str("device-revoked"),
            AuditKind::Alert(c) => write!(f, "alert-{c}"),
            AuditKind::LinkCreated => f.write_str("link-created"),
            AuditKind::LinkRevoked => f.write_str("link-revoked"),
            AuditKind::LinkOpened => f.write_str("link-opened"),
            AuditKind::LinkRefused => f.write_str("link-refused"),
            AuditKind::RetentionChanged => f.write_str("retention-changed"),
            AuditKind::ConflictPolicyChanged => f.write_str("conflict-policy-changed"),
            AuditKind::AppPasswordAdded => f.write_str("app-password-added"),
            AuditKind::AppPasswordRevoked => f.write_str("app-password-revoked"),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct AuditRec {
    pub format: u8,
    pub at: Timestamp,
    pub kind: AuditKind,
    /// The account name concerned ("" for none).
    pub user: String,
    /// The device or network address it came from ("" if not known).
    pub from: String,
    pub detail: String,
}

/// Entries of the log [`Store::recent_alerts`] looks through.
const ALERT_SCAN: usize = 10_000;
/// Entries of the log a filtered [`Store::audit_filtered`] looks through.
const AUDIT_SCAN: usize = 200_000;

impl AuditRec {
    /// The entry as the protocol carries it.
    pub fn line(self) -> shelf_protocol::AuditLine {
        shelf_protocol::AuditLine {
            at: self.at,
            what: self.kind.to_string(),
            user: self.user,
            from: self.from,
            detail: self.detail,
        }
    }
}

impl Store {
    /// Appends an entry about `account` (0: the server). Failures are logged, not returned:
    /// the action itself already happened.
    pub fn audit(&self, account: u64, kind: AuditKind, user: &str, from: &str, detail: &str) {
        if let Err(e) = self.audit_inner(account, kind, user, from, detail) {
            tracing::error!(error = %e, "could not write the audit log");
        }
    }

    fn audit_inner(
        &self,
        account: u64,
        kind: AuditKind,
        user: &str,
        from: &str,
        detail: &str,
    ) -> Result<()> {
        let seq = self.db.generate_id()? + 1;
        let key = seq.to_be_bytes();
        let rec = AuditRec {
            format: super::FORMAT,
            at: self.now(),
            kind,
            user: user.to_string(),
            from: from.to_string(),
            detail: detail.to_string(),
        };
        // Sealed with the server's own key (account 0), not the account's: the log outlives
        // a deleted account, whose key is destroyed.
        let mut value = account.to_be_bytes().to_vec();
        value.extend(self.seal_rec(0, b"audit", &key, &rec)?);
        self.audit.insert(key, value)?;
        Ok(())
    }

    /// The newest `limit` audit entries (oldest first), optionally only those of one account.
    pub fn audit_log(&self, account: Option<u64>, limit: usize) -> Result<Vec<AuditRec>> {
        let mut out = Vec::new();
        for item in self.audit.iter().rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let owner = super::sealed::node_owner(&v)?;
            if account.is_some_and(|a| a != owner) {
                continue;
            }
            out.push(self.open_rec(0, b"audit", &k, &v[8..])?);
        }
        out.reverse();
        Ok(out)
    }

    /// The newest `limit` entries (oldest first) of user `user` (when given) whose kind
    /// starts with `kind` (when given), from the newest [`AUDIT_SCAN`] entries.
    pub fn audit_filtered(
        &self,
        user: Option<&str>,
        kind: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRec>> {
        let mut out = Vec::new();
        for item in self.audit.iter().rev().take(AUDIT_SCAN) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let rec: AuditRec = self.open_rec(0, b"audit", &k, &v[8..])?;
            if user.is_some_and(|u| rec.user != u) {
                continue;
            }
            if kind.is_some_and(|want| !rec.kind.to_string().starts_with(want)) {
                continue;
            }
            out.push(rec);
        }
        out.reverse();
        Ok(out)
    }

    /// The newest `limit` alerts about `account` (oldest first), from the newest
    /// [`ALERT_SCAN`] entries of the log.
    pub fn recent_alerts(
        &self,
        account: u64,
        limit: usize,
    ) -> Result<Vec<shelf_protocol::AuditLine>> {
        let mut out = Vec::new();
        for item in self.audit.iter().rev().take(ALERT_SCAN) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            if super::sealed::node_owner(&v)? != account {
                continue;
            }
            let rec: AuditRec = self.open_rec(0, b"audit", &k, &v[8..])?;
            if matches!(rec.kind, AuditKind::Alert(_)) {
                out.push(rec.line());
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Raises an alert about `account` (0: the server as a whole): audit log, the account's
    /// `shelf events`, and every admin's.
    pub fn alert(&self, class: AlertClass, account: u64, user: &str, message: &str) {
        self.alert_split(class, account, user, message, message);
    }

    /// [`Store::alert`] with one message for the account's own devices and another, which
    /// names no file, for the admins and the audit log.
    pub fn alert_split(
        &self,
        class: AlertClass,
        account: u64,
        user: &str,
        message: &str,
        for_admins: &str,
    ) {
        tracing::warn!(%class, user, message = for_admins, "alert");
        self.audit(account, AuditKind::Alert(class), user, "", for_admins);
        let mut to = vec![account];
        match self.list_users() {
            Ok(users) => to.extend(
                users
                    .iter()
                    .filter(|u| u.role == Role::Admin && u.id != account)
                    .map(|u| u.id),
            ),
            Err(e) => tracing::error!(error = %e, "cannot list admins for an alert"),
        }
        for a in to.into_iter().filter(|a| *a != 0) {
            let change = Change {
                seq: 0, // drawn when recorded
                kind: ChangeKind::Alert(class),
                node: 0,
                parent: 0,
                name: String::new(),
                device: String::new(),
                path: if a == account { message } else { for_admins }.to_string(),
                at: self.now(),
            };
            if let Err(e) = self.record_change(a, change) {
                tracing::error!(error = %e, "cannot record an alert");
            }
        }
    }

    /// A stored chunk failed verification when read: an integrity alert, once per chunk
    /// while the server runs (a damaged photo read again and again raises one alert).
    pub fn chunk_failed(&self, account: u64, user: &str, id: &shelf_protocol::ChunkId) {
        tracing::error!(user, chunk = %id, "stored chunk failed verification");
        let first = self.failed_chunks.lock_or_recover().insert((account, id.0));
        if first {
            self.alert(
                AlertClass::Integrity,
                account,
                user,
                &format!(
                    "stored data of {user} failed verification (chunk {}); the file reads as an I/O error; run shelf-server scrub",
                    hex::encode(&id.0[..8])
                ),
            );
        }
    }

    /// A device reports that its uploads keep failing: a sync alert for the account and its
    /// admins, at most one per device a minute.
    pub fn sync_failure(&self, ctx: &super::Ctx, path: &str, error: &str) {
        let now = self.now().secs;
        let key = (ctx.account, ctx.device.clone());
        let due = {
            let mut m = self.sync_alerts.lock_or_recover();
            let last = m.entry(key).or_insert(i64::MIN);
            let due = now.saturating_sub(*last) >= 60;
            if due {
                *last = now;
            }
            due
        };
        if due {
            let cut = |s: &str| s.chars().take(300).collect::<String>();
            let (path, error) = (cut(path), cut(error));
            self.alert_split(
                AlertClass::Sync,
                ctx.account,
                &ctx.user,
                &format!(
                    "{} on {}: {path} keeps failing to upload: {error}",
                    ctx.user, ctx.device
                ),
                &format!(
                    "{} on {}: uploads keep failing: {error}",
                    ctx.user, ctx.device
                ),
            );
        }
    }

    /// An integrity alert about stored data of `account`.
    pub fn integrity_alert(&self, account: u64, message: &str) {
        let user = self
            .list_users()
            .ok()
            .and_then(|u| u.into_iter().find(|a| a.id == account))
            .map(|a| a.name)
            .unwrap_or_default();
        self.alert(AlertClass::Integrity, account, &user, message);
    }
}
