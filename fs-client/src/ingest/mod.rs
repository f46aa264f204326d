//! Bringing folders from the client's disk into the store: the first 1:1 import, sorted
//! into categories, and scheduled backup runs that send only what changed.
//!
//! * [`classify`] — photo, video or file, by magic bytes then extension.
//! * [`index`] — what a source folder's earlier runs sent (skip unchanged, resume).
//! * [`run`] — one import/backup run over one connection.
//! * [`schedule`] — cron schedules in local time; the first Sunday of the month.
//! * [`jobs`] — the registered backup jobs and their last results.

pub mod classify;
pub mod index;
pub mod jobs;
pub mod run;
pub mod schedule;
