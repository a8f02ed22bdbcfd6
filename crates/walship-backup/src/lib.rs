//! Base backups in barman-cloud's layout: what `walship backup`, `backup-list`,
//! `backup-show`, `backup-delete` and `restore` read and write, so that walship and
//! barman-cloud share one catalog and a user can switch either way in the middle of a
//! retention window.
//!
//! - the catalog's formats, without I/O: [`info`] (the `backup.info` file barman reads
//!   strictly), [`pyrepr`] (the Python literals some of its values are written as),
//!   [`json`] (barman-cloud's `--format json`, which the CloudNativePG plugin parses),
//!   [`present`] (what `backup-list` and `backup-show` print), [`retention`] (barman's
//!   retention rules);
//! - taking a backup, [`take`]: the PostgreSQL [`session`], what a backup copies and how
//!   ([`pgdata`], [`walk`], [`tarball`], [`compress`] with [`pgzip`], [`parts`]), the parts in flight
//!   ([`upload`]), and the [`record`] `backup.info` keeps of it (STARTED, DONE, FAILED);
//! - the [`catalog`] of a server's backups in a store, read as barman reads it;
//!   [`restore`]; [`delete`] (retention and keeps applied to a store); [`upkeep`] (the
//!   daemon's retention round and what the catalog says an operator can recover to).
//!
//! It must never write a `backup.info` key barman does not know (barman then refuses
//! the whole server's catalog), nor mark a backup DONE before everything it needs is
//! stored.
//!
//! Dependencies: `walship-store` (the objects), `walship-wal` (the bucket layout),
//! `chrono` (backup times with their offsets, as barman writes them), `futures` (several
//! `backup.info` reads in flight when listing), `tokio-postgres` (the backup's session:
//! PostgreSQL's protocol without libpq), `tar` (the archives barman-cloud writes and
//! reads), `flate2`, `bzip2`, `snap`, `lz4_flex` (the compressions barman-cloud-restore
//! reads for base backups), `bytes`, `sha2` and `hex` (parts and their hash), `serde_json` (`walship.json`,
//! walship's record of each object's hash), `tokio` and `tokio-util` (uploads in flight,
//! cancellation), `thiserror`, `tracing` (a restore downloading a damaged backup
//! again says so while it runs).

pub mod catalog;
pub mod compress;
pub mod delete;
pub mod info;
pub mod json;
pub mod parts;
pub mod pgdata;
pub mod pgzip;
pub mod present;
pub mod pyrepr;
pub mod record;
pub mod restore;
pub mod retention;
pub mod session;
pub mod take;
pub mod tarball;
pub mod upkeep;
pub mod upload;
pub mod walk;

pub use catalog::{Catalog, Entry, KeepTarget, Listing};

pub use info::{BackupInfo, InfoError, InfoTime, Status, Tablespace};
