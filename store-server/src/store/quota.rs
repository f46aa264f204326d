//! Per-account storage quotas: the most bytes of chunk bodies (after dedup, history
//! included) an account may hold. Kept in the `prefs` tree (account ‖ `quota` → u64 BE);
//! absent means no quota. A store past the quota is refused with `QuotaExceeded` (EDQUOT on
//! the mount) before anything is written, and raises one quota alert.

use super::Store;
use crate::error::Result;
use shelf_protocol::sync::LockOrRecover;
use shelf_protocol::{AlertClass, ErrorCode};

fn quota_key(account: u64) -> Vec<u8> {
    let mut k = account.to_be_bytes().to_vec();
    k.extend_from_slice(b"quota");
    k
}

impl Store {
    pub fn quota(&self, account: u64) -> Result<Option<u64>> {
        Ok(self
            .prefs
            .get(quota_key(account))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    pub fn set_quota(&self, account: u64, bytes: Option<u64>) -> Result<()> {
        match bytes {
            Some(b) => self.prefs.insert(quota_key(account), &b.to_be_bytes())?,
            None => self.prefs.remove(quota_key(account))?,
        };
        self.quota_alerted.lock_or_recover().remove(&account);
        Ok(())
    }

    /// Refuses to store `extra` more bytes for `account` past its quota.
    pub fn check_quota(&self, account: u64, user: &str, extra: u64) -> Result<()> {
        let Some(quota) = self.quota(account)? else {
            return Ok(());
        };
        let used = self.chunks.stored_bytes(account)?;
        if used.saturating_add(extra) <= quota {
            return Ok(());
        }
        let first = self.quota_alerted.lock_or_recover().insert(account);
        if first {
            self.alert(
                AlertClass::Quota,
                account,
                user,
                &format!(
                    "{user} reached the storage quota ({used} of {quota} bytes used); uploads are refused until space is freed or the quota raised"
                ),
            );
        }
        Err(ErrorCode::QuotaExceeded.into())
    }
}
