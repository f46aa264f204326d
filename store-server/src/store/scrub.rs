//! Scrubbing: re-reads every stored chunk of every account and checks it twice — its
//! authentication tag (sealed for this account and this id, unchanged since) and the BLAKE3
//! hash of the plaintext against the chunk's id.

use super::Store;
use crate::error::Result;
use shelf_protocol::ChunkId;

/// What a scrub found.
#[derive(Debug, Default)]
pub struct ScrubReport {
    pub checked: u64,
    /// Plaintext bytes checked.
    pub bytes: u64,
    /// One line per chunk that failed: account, chunk id, why.
    pub failed: Vec<String>,
}

impl Store {
    /// Checks every chunk; failures are reported and raised as integrity alerts.
    /// One server of a shared store at a time: refused while another one scrubs.
    pub fn scrub(&self) -> Result<ScrubReport> {
        let _alone = self.job_lock("scrub")?;
        let (at, started) = (self.now(), std::time::Instant::now());
        let report = self.scrub_all()?;
        self.record_job(
            super::health::Job::Scrub,
            at,
            started.elapsed(),
            format!(
                "{} chunks ({} bytes) checked, {} failed",
                report.checked,
                report.bytes,
                report.failed.len()
            ),
        );
        Ok(report)
    }

    fn scrub_all(&self) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        for account in self.list_users()? {
            let mut bad = 0u64;
            for (id, _) in self.chunks.ids(account.id)? {
                report.checked += 1;
                let why = match self.chunks.get(account.id, &id) {
                    Ok(body) if ChunkId(*blake3::hash(&body).as_bytes()) == id => {
                        report.bytes += body.len() as u64;
                        continue;
                    }
                    Ok(_) => "content does not match its id".to_string(),
                    Err(e) => e.to_string(),
                };
                bad += 1;
                report.failed.push(format!(
                    "{} chunk {}: {why}",
                    account.name,
                    hex::encode(id.0)
                ));
            }
            if bad > 0 {
                self.integrity_alert(
                    account.id,
                    &format!(
                        "scrub: {bad} stored chunk(s) of {} failed verification",
                        account.name
                    ),
                );
            }
        }
        Ok(report)
    }
}
