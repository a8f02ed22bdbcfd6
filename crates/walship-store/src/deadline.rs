//! How long one request to a store may take.
//!
//! A store that accepts the connection and then says nothing must become a timeout that
//! the caller can retry or report, never a hang: archive_command would hold PostgreSQL's
//! archiver, restore_command would hold recovery, and the daemon would hold an upload
//! slot. Every store applies the same three bounds to each request (each attempt, when
//! its SDK retries):
//! - [`CONNECT`]: to open the connection (TCP and TLS);
//! - [`FIRST_BYTE`]: from the request being sent to the first byte of the answer, and
//!   between two reads of a streamed answer;
//! - a floor on the transfer rate, [`MIN_BYTES_PER_SECOND`]: a request that carries or
//!   returns `n` bytes gets `n / MIN_BYTES_PER_SECOND` on top ([`for_body`]).
//!
//! The floor is low (a 16 MiB segment gets 16 s more) so that a slow but working link
//! is never cut, while a stalled one is given up within tens of seconds.

use std::time::Duration;

/// Opening a connection, TLS handshake included.
pub const CONNECT: Duration = Duration::from_secs(5);
/// From a request sent to the first byte of its answer (and between reads of a body).
pub const FIRST_BYTE: Duration = Duration::from_secs(20);
/// The slowest transfer rate taken for a working link: 1 MiB/s.
pub const MIN_BYTES_PER_SECOND: u64 = 1 << 20;

/// The whole of one request (one attempt) that carries or returns `len` bytes:
/// connecting, the transfer at the floor rate, and the wait for the answer.
pub fn for_body(len: u64) -> Duration {
    CONNECT + FIRST_BYTE + Duration::from_secs(len.div_ceil(MIN_BYTES_PER_SECOND))
}

/// The whole of one operation whose attempts each get `attempt`, the retries of fast
/// failures (a 503, a reset) included: one silent attempt and a little more. The caller
/// (the daemon's backoff, wal-fetch's budget, PostgreSQL's own retry of
/// archive_command) decides whether to try again, so a silent store never holds an
/// upload slot for minutes.
pub fn for_operation(attempt: Duration) -> Duration {
    attempt + Duration::from_secs(5)
}

/// One request without a body worth counting (head, list page, delete, token).
pub fn for_small_request() -> Duration {
    for_body(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bigger_body_gets_a_longer_deadline_at_the_floor_rate() {
        assert_eq!(for_small_request(), CONNECT + FIRST_BYTE);
        assert_eq!(for_body(1), CONNECT + FIRST_BYTE + Duration::from_secs(1));
        assert_eq!(
            for_body(16 << 20) - for_body(0),
            Duration::from_secs(16),
            "a 16 MiB segment gets 16 s at 1 MiB/s"
        );
    }
}
