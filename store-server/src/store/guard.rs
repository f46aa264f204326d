//! Guarding logins against guessing: after [`MAX_FAILURES`] failed logins in a row an
//! account is locked for [`Store::lockout_secs`] (15 minutes by default), even for the right
//! password; a network address with more than [`MAX_ADDR_FAILURES`] failures within that
//! time is refused altogether (against guessing across many accounts). A lock raises a
//! security alert for the account's owner and the admins; every failure is audited.
//!
//! Account state lives in the `logins` tree (user name → [`LoginState`]) so a restart does
//! not unlock; address state is kept in memory.

use super::audit::AuditKind;
use super::{decode, Store, FORMAT};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use shelf_protocol::sync::LockOrRecover;
use shelf_protocol::{AlertClass, ErrorCode};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Failed logins in a row that lock an account.
pub const MAX_FAILURES: u32 = 5;
/// Failed logins from one address within the lockout time that block the address.
pub const MAX_ADDR_FAILURES: u32 = 50;
/// Default lockout: 15 minutes.
pub const LOCKOUT_SECS: i64 = 15 * 60;

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct LoginState {
    pub format: u8,
    /// Failures since the last success or lock.
    pub failures: u32,
    /// Unix seconds until which the account is locked (0: not locked).
    pub locked_until: i64,
}

/// Failures per address: (window start, count, alerted).
#[derive(Default)]
pub struct AddressGuard {
    by_addr: Mutex<HashMap<IpAddr, (i64, u32, bool)>>,
}

impl Store {
    fn login_state(&self, user: &str) -> Result<LoginState> {
        Ok(match self.logins.get(user)? {
            Some(b) => decode(&b)?,
            None => LoginState::default(),
        })
    }

    /// Refuses a login attempt early: the address or the account is locked.
    pub(crate) fn check_login_allowed(&self, user: &str, addr: Option<IpAddr>) -> Result<()> {
        let now = self.now().secs;
        self.check_address_allowed(addr)?;
        if self.login_state(user)?.locked_until > now {
            self.audit(
                0,
                AuditKind::LoginFailed,
                user,
                &from(addr),
                "account locked",
            );
            return Err(ErrorCode::Locked.into());
        }
        Ok(())
    }

    /// Refuses an address with too many failures (logins, link tokens, link passwords)
    /// within the lockout time.
    pub(crate) fn check_address_allowed(&self, addr: Option<IpAddr>) -> Result<()> {
        let now = self.now().secs;
        if let Some(ip) = addr {
            let blocked = self
                .addr_guard
                .by_addr
                .lock_or_recover()
                .get(&ip)
                .is_some_and(|(start, n, _)| {
                    now < start + self.lockout_secs && *n >= MAX_ADDR_FAILURES
                });
            if blocked {
                return Err(ErrorCode::Locked.into());
            }
        }
        Ok(())
    }

    /// Counts a failure against `addr` (`what` failed); the failure that blocks it raises
    /// a security alert for the admins.
    pub(crate) fn address_failed(&self, addr: Option<IpAddr>, what: &str) {
        let now = self.now().secs;
        let Some(ip) = addr else {
            return;
        };
        let newly_blocked = {
            let mut m = self.addr_guard.by_addr.lock_or_recover();
            let e = m.entry(ip).or_insert((now, 0, false));
            if now >= e.0 + self.lockout_secs {
                *e = (now, 0, false);
            }
            e.1 += 1;
            let newly = e.1 >= MAX_ADDR_FAILURES && !e.2;
            e.2 |= newly;
            newly
        };
        if newly_blocked {
            self.alert(
                AlertClass::Security,
                0,
                "",
                &format!(
                    "{MAX_ADDR_FAILURES} failures from {ip} (last: {what}): logins and links from there are refused for {} minutes",
                    self.lockout_secs / 60
                ),
            );
        }
    }

    /// Counts a failed login of `user` (which may not exist) from `addr`.
    pub(crate) fn login_failed(&self, user: &str, account: Option<u64>, addr: Option<IpAddr>) {
        let now = self.now().secs;
        let from = from(addr);
        self.audit(
            account.unwrap_or(0),
            AuditKind::LoginFailed,
            user,
            &from,
            "wrong password or unknown user",
        );
        self.address_failed(addr, "failed login");
        let Some(account) = account else {
            return;
        };
        let locked = (|| -> Result<bool> {
            let mut st = self.login_state(user)?;
            st.format = FORMAT;
            st.failures += 1;
            let lock = st.failures >= MAX_FAILURES;
            if lock {
                st.failures = 0;
                st.locked_until = now + self.lockout_secs;
            }
            self.logins.insert(user, postcard::to_stdvec(&st)?)?;
            Ok(lock)
        })();
        match locked {
            Ok(true) => {
                self.audit(account, AuditKind::Locked, user, &from, "");
                self.alert(
                    AlertClass::Security,
                    account,
                    user,
                    &format!(
                        "{MAX_FAILURES} failed logins in a row for {user} (last from {from}): the account is locked for {} minutes",
                        (self.lockout_secs + 59) / 60
                    ),
                );
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "cannot record a failed login"),
        }
    }

    /// A successful login clears the count of failures.
    pub(crate) fn login_succeeded(&self, user: &str, account: u64, device: &str) {
        if let Err(e) = self.logins.remove(user) {
            tracing::error!(error = %e, "cannot clear failed logins");
        }
        self.audit(account, AuditKind::Login, user, device, "");
    }
}

fn from(addr: Option<IpAddr>) -> String {
    addr.map_or_else(|| "local".to_string(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkstore::PackStore;
    use shelf_protocol::{Role, Timestamp};
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    fn store_at(clock: Arc<AtomicI64>) -> (Store, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::temporary().unwrap();
        let chunks = Arc::new(PackStore::open(tmp.path().join("packs"), &db).unwrap());
        let mut store = Store::with_chunk_store(db, chunks).unwrap();
        store.clock = Arc::new(move || Timestamp {
            secs: clock.load(Ordering::SeqCst),
            nanos: 0,
        });
        (store, tmp)
    }

    fn code(r: Result<(String, super::super::Ctx)>) -> Option<ErrorCode> {
        r.err().map(|e| e.code())
    }

    #[test]
    fn five_failures_lock_the_account_until_the_lockout_ends() {
        let clock = Arc::new(AtomicI64::new(1_800_000_000));
        let (store, _tmp) = store_at(clock.clone());
        store.add_user("ann", "right", Role::User).unwrap();
        store.add_user("boss", "pw", Role::Admin).unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..4 {
            assert_eq!(
                code(store.login_from("ann", "wrong", "d", Some(ip))),
                Some(ErrorCode::AuthFailed)
            );
        }
        // A success clears the count.
        assert!(store.login_from("ann", "right", "d", Some(ip)).is_ok());
        for _ in 0..5 {
            assert_eq!(
                code(store.login_from("ann", "wrong", "d", Some(ip))),
                Some(ErrorCode::AuthFailed)
            );
        }
        assert_eq!(
            code(store.login_from("ann", "right", "d", Some(ip))),
            Some(ErrorCode::Locked),
            "locked: even the right password is refused"
        );
        let log = store.audit_log(None, 100).unwrap();
        assert!(log
            .iter()
            .any(|e| e.kind == AuditKind::Locked && e.user == "ann"));
        assert!(log
            .iter()
            .any(|e| e.kind == AuditKind::Alert(AlertClass::Security)));
        clock.fetch_add(LOCKOUT_SECS - 1, Ordering::SeqCst);
        assert_eq!(
            code(store.login_from("ann", "right", "d", Some(ip))),
            Some(ErrorCode::Locked)
        );
        clock.fetch_add(1, Ordering::SeqCst);
        assert!(store.login_from("ann", "right", "d", Some(ip)).is_ok());
        assert!(
            store.logins.get("ann").unwrap().is_none(),
            "cleared by success"
        );
    }

    #[test]
    fn one_address_guessing_across_accounts_is_blocked() {
        let clock = Arc::new(AtomicI64::new(1_800_000_000));
        let (store, _tmp) = store_at(clock.clone());
        store.add_user("ann", "right", Role::User).unwrap();
        let bad: IpAddr = "198.51.100.1".parse().unwrap();
        let good: IpAddr = "198.51.100.2".parse().unwrap();
        for i in 0..MAX_ADDR_FAILURES {
            // Unknown users: no account gets locked, only the address counts.
            let r = store.login_from(&format!("user{i}"), "guess", "d", Some(bad));
            assert_eq!(code(r), Some(ErrorCode::AuthFailed));
        }
        assert_eq!(
            code(store.login_from("ann", "right", "d", Some(bad))),
            Some(ErrorCode::Locked)
        );
        assert!(store.login_from("ann", "right", "d", Some(good)).is_ok());
        clock.fetch_add(LOCKOUT_SECS, Ordering::SeqCst);
        assert!(store.login_from("ann", "right", "d", Some(bad)).is_ok());
    }
}
