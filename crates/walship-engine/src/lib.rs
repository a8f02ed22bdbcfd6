//! What walship does with WAL files: ship one to the archive ([`Archiver::push`]),
//! bring one back ([`Archiver::fetch`]), and check that an archive is usable
//! ([`Archiver::check`]). The long-running daemon that drives these rules for every
//! `.ready` file is `walship-daemon`, a crate of its own above this one.
//!
//! The rules that keep WAL safe are all in this crate:
//! - a segment is validated (size, page header) before it leaves the machine, so a
//!   truncated or foreign file is never archived under a WAL name;
//! - every upload is create-only; when the object exists, its content is compared
//!   (walship's stored SHA-256, or the decompressed bytes of an object another tool
//!   wrote): identical is success, because PostgreSQL re-archives after a crash, and
//!   different is an error naming both checksums; the existing object is never touched;
//! - the raw file's SHA-256 goes into the object's metadata and is checked on fetch;
//! - fetched files are written next to their destination, fsynced, then renamed, so
//!   PostgreSQL never sees half a segment.
//!
//! The engine knows the store only through [`walship_store::Store`] and the bucket
//! layout only through [`walship_wal::Layout`]: it knows nothing of clouds, credentials
//! or configuration files.
//!
//! Dependencies: `walship-wal` (names, validation, layout, codecs), `walship-store`,
//! `tokio` (file I/O, blocking compression off the async threads), `bytes`,
//! `thiserror`, `tracing` (spans carry the WAL name), `libc` (`O_NONBLOCK`, so that a
//! FIFO given as %p is refused instead of blocking the open).

mod archiver;
mod identity;

pub use archiver::{
    Archiver, ArchiverSettings, CheckReport, FetchError, FetchOutcome, META_SHA256, META_SIZE,
    PushError, PushOutcome,
};
pub use identity::FileIdentity;

/// Test fixtures shared with the crates above (`walship-daemon`'s tests), behind the
/// `test-support` feature.
#[cfg(any(test, feature = "test-support"))]
pub mod test_support {
    use std::path::Path;

    /// A 1 MiB segment: a real PostgreSQL 15 first page (from walship-wal's fixtures),
    /// then deterministic filler.
    pub fn segment_bytes(name: &str, salt: u8) -> Vec<u8> {
        let page = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../walship-wal/testdata/pg15")
                .join(format!("{name}.page")),
        )
        .unwrap();
        let mut data = page;
        let mut x = salt as u32;
        while data.len() < 1 << 20 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            data.push((x >> 16) as u8 & 0x0f);
        }
        data
    }
}
