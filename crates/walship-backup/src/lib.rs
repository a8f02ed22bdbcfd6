//! Base backups in barman-cloud's layout: what `walship backup`, `backup-list`,
//! `backup-show`, `backup-delete` and `restore` read and write, so that walship and
//! barman-cloud share one catalog and a user can switch either way in the middle of a
//! retention window.
//!
//! This first part holds the catalog's formats, without I/O: [`info`], the
//! `backup.info` file barman reads strictly, and [`pyrepr`], the Python literals some of
//! its values are written as.
//!
//! It must never write a `backup.info` key barman does not know (barman then refuses
//! the whole server's catalog), nor mark a backup DONE before everything it needs is
//! stored.
//!
//! Dependencies: `chrono` (backup times with their offsets, as barman writes them),
//! `thiserror`.

pub mod info;
pub mod pyrepr;

pub use info::{BackupInfo, InfoError, InfoTime, Status, Tablespace};
