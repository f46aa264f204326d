//! Uploads that keep failing: per file, how many times in a row, the last error and since
//! when. The core records each upload's outcome here and, when the list changes, writes it
//! to `CACHE/failures`, which `shelf status` turns into an alert.

use crate::cache::UploadFailure;
use crate::sync::LockOrRecover;
use shelf_protocol::NodeId;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Default)]
pub struct UploadFailures {
    /// node → (failures in a row, last error, first failure).
    by_node: Mutex<BTreeMap<NodeId, (u32, String, SystemTime)>>,
}

impl UploadFailures {
    /// Records a failed upload of `node`; returns how many in a row and the list to save.
    pub fn failed(&self, node: NodeId, error: String) -> (u32, Vec<UploadFailure>) {
        let mut f = self.by_node.lock_or_recover();
        let entry = f
            .entry(node)
            .or_insert_with(|| (0, String::new(), SystemTime::now()));
        entry.0 += 1;
        entry.1 = error;
        let count = entry.0;
        (count, list(&f))
    }

    /// Records a successful upload of `node`; returns the list to save if it changed.
    pub fn succeeded(&self, node: NodeId) -> Option<Vec<UploadFailure>> {
        let mut f = self.by_node.lock_or_recover();
        f.remove(&node).map(|_| list(&f))
    }
}

fn list(f: &BTreeMap<NodeId, (u32, String, SystemTime)>) -> Vec<UploadFailure> {
    f.iter()
        .map(|(node, (count, error, since))| UploadFailure {
            node: *node,
            count: *count,
            since: since
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            error: error.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_in_a_row_and_a_success_clears_them() {
        let f = UploadFailures::default();
        assert_eq!(f.failed(7, "one".into()).0, 1);
        let (count, list) = f.failed(7, "two".into());
        assert_eq!((count, list.len(), list[0].error.as_str()), (2, 1, "two"));
        assert!(f.succeeded(8).is_none(), "nothing to clear");
        assert_eq!(f.succeeded(7).map(|l| l.len()), Some(0));
    }
}
