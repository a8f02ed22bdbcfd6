//! WAL file names: the four kinds barman-cloud accepts, and the segment
//! arithmetic PostgreSQL uses to number them.

use std::fmt;
use std::str::FromStr;

use crate::error::WalError;

/// Smallest WAL segment PostgreSQL allows (`WalSegMinSize`, 1 MiB).
const MIN_SEGMENT_SIZE: u64 = 1 << 20;
/// Largest WAL segment PostgreSQL allows (`WalSegMaxSize`, 1 GiB).
const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// A file name PostgreSQL hands to `archive_command`/`restore_command`, in
/// one of the four shapes barman-cloud accepts (`barman/xlog.py`, `_xlog_re`):
///
/// * `Segment`: `TTTTTTTTLLLLLLLLSSSSSSSS`, a WAL segment;
/// * `History`: `TTTTTTTT.history`, a timeline history file;
/// * `Backup`: `TTTTTTTTLLLLLLLLSSSSSSSS.OOOOOOOO.backup`, a backup history file;
/// * `Partial`: `TTTTTTTTLLLLLLLLSSSSSSSS.partial`, the last, incomplete
///   segment of a timeline, archived at promotion or by `pg_receivewal`.
///
/// Hex digits must be uppercase. barman's regular expression also takes
/// lowercase, but PostgreSQL never writes it (`IsXLogFileName` checks against
/// `0123456789ABCDEF`) and `Display` must give back exactly the name parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalName {
    Segment {
        timeline: u32,
        log: u32,
        seg: u32,
    },
    History {
        timeline: u32,
    },
    Backup {
        timeline: u32,
        log: u32,
        seg: u32,
        offset: u32,
    },
    Partial {
        timeline: u32,
        log: u32,
        seg: u32,
    },
}

impl WalName {
    /// Parses a bare file name (not a path). Accepts exactly the names barman
    /// accepts, except that hex digits must be uppercase as PostgreSQL writes them.
    pub fn parse(name: &str) -> Result<WalName, WalError> {
        if let Some(parsed) = parse_with(name, false) {
            return Ok(parsed);
        }
        let hint = if parse_with(name, true).is_some() {
            " (hex digits must be uppercase, as PostgreSQL writes them)"
        } else if name.contains('/') {
            " (give the file name, not a path)"
        } else {
            ""
        };
        Err(WalError::InvalidName {
            name: name.to_owned(),
            hint,
        })
    }

    /// The timeline every kind of name carries.
    pub fn timeline(&self) -> u32 {
        match *self {
            WalName::Segment { timeline, .. }
            | WalName::History { timeline }
            | WalName::Backup { timeline, .. }
            | WalName::Partial { timeline, .. } => timeline,
        }
    }

    pub fn is_segment(&self) -> bool {
        matches!(self, WalName::Segment { .. })
    }

    pub fn is_history(&self) -> bool {
        matches!(self, WalName::History { .. })
    }

    pub fn is_backup(&self) -> bool {
        matches!(self, WalName::Backup { .. })
    }

    pub fn is_partial(&self) -> bool {
        matches!(self, WalName::Partial { .. })
    }

    /// True for the kinds whose content is WAL with page headers (segments
    /// and `.partial` files), which [`crate::validate_segment`] can check;
    /// `.history` and `.backup` files are short text files.
    pub fn has_page_headers(&self) -> bool {
        self.is_segment() || self.is_partial()
    }

    /// `(timeline, log, seg)` for every kind but `History`.
    pub fn segment_parts(&self) -> Option<(u32, u32, u32)> {
        match *self {
            WalName::Segment { timeline, log, seg }
            | WalName::Backup {
                timeline, log, seg, ..
            }
            | WalName::Partial { timeline, log, seg } => Some((timeline, log, seg)),
            WalName::History { .. } => None,
        }
    }

    /// The plain segment a `.partial` or `.backup` name refers to (a segment
    /// is its own); `None` for history files.
    pub fn segment(&self) -> Option<WalName> {
        self.segment_parts()
            .map(|(timeline, log, seg)| WalName::Segment { timeline, log, seg })
    }

    /// barman's "hash directory": the first 16 hex digits (timeline and log),
    /// under which segments, `.partial` and `.backup` files are stored.
    /// History files have none; they sit directly under `wals/`.
    pub fn hash_dir(&self) -> Option<String> {
        self.segment_parts()
            .map(|(timeline, log, _)| format!("{timeline:08X}{log:08X}"))
    }

    /// The segment's position counting from LSN 0 (`XLogSegNo`), for every
    /// kind but `History`. `None` if the size is not a valid segment size or
    /// the name's segment number does not exist at that size.
    pub fn segment_number(&self, wal_segment_size: u64) -> Option<u64> {
        let (_, log, seg) = self.segment_parts()?;
        let per_log = segments_per_xlog_id(wal_segment_size)?;
        if u64::from(seg) >= per_log {
            return None;
        }
        Some(u64::from(log) * per_log + u64::from(seg))
    }

    /// The plain segment number `n` of `timeline` (PostgreSQL's
    /// `XLogFileName`). `None` for an invalid size or when `n` is beyond the
    /// last segment a 64-bit LSN can address.
    pub fn from_segment_number(timeline: u32, n: u64, wal_segment_size: u64) -> Option<WalName> {
        let per_log = segments_per_xlog_id(wal_segment_size)?;
        let log = u32::try_from(n / per_log).ok()?;
        let seg = u32::try_from(n % per_log).ok()?;
        Some(WalName::Segment { timeline, log, seg })
    }

    /// The LSN at which this segment starts (`XLogSegNoOffsetToRecPtr` with
    /// offset 0): what `xlp_pageaddr` of its first page must be.
    pub fn start_lsn(&self, wal_segment_size: u64) -> Option<u64> {
        self.segment_number(wal_segment_size)?
            .checked_mul(wal_segment_size)
    }

    /// The segment after this one on the same timeline, rolling the segment
    /// number over into the log number as PostgreSQL does (there are
    /// `0x100000000 / size` segments per log number). Only plain segments
    /// have a successor; `None` also for an invalid size, a segment number
    /// that does not exist at that size, or the very last segment.
    pub fn next_segment(&self, wal_segment_size: u64) -> Option<WalName> {
        if !self.is_segment() {
            return None;
        }
        let n = self.segment_number(wal_segment_size)?.checked_add(1)?;
        WalName::from_segment_number(self.timeline(), n, wal_segment_size)
    }
}

impl fmt::Display for WalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WalName::Segment { timeline, log, seg } => {
                write!(f, "{timeline:08X}{log:08X}{seg:08X}")
            }
            WalName::History { timeline } => write!(f, "{timeline:08X}.history"),
            WalName::Backup {
                timeline,
                log,
                seg,
                offset,
            } => write!(f, "{timeline:08X}{log:08X}{seg:08X}.{offset:08X}.backup"),
            WalName::Partial { timeline, log, seg } => {
                write!(f, "{timeline:08X}{log:08X}{seg:08X}.partial")
            }
        }
    }
}

impl FromStr for WalName {
    type Err = WalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WalName::parse(s)
    }
}

/// True if PostgreSQL accepts `size` as `wal_segment_size`: a power of two
/// from 1 MiB to 1 GiB (`IsValidWalSegSize`).
pub fn is_valid_segment_size(size: u64) -> bool {
    size.is_power_of_two() && (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&size)
}

/// Segments per log number (`XLogSegmentsPerXLogId`): `0x100000000 / size`,
/// e.g. 256 for 16 MiB segments. `None` for an invalid segment size.
pub fn segments_per_xlog_id(wal_segment_size: u64) -> Option<u64> {
    is_valid_segment_size(wal_segment_size).then(|| (1u64 << 32) / wal_segment_size)
}

/// An LSN the way PostgreSQL prints it, with the low half zero-padded so that
/// the text is unambiguous: `0/01000000`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:08X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

fn parse_with(name: &str, allow_lower: bool) -> Option<WalName> {
    let b = name.as_bytes();
    let hex = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        let ok = part.iter().all(|c| {
            c.is_ascii_digit()
                || (b'A'..=b'F').contains(c)
                || (allow_lower && (b'a'..=b'f').contains(c))
        });
        if !ok {
            return None;
        }
        // All bytes are ASCII hex digits here, so this is valid UTF-8 and parses.
        u32::from_str_radix(std::str::from_utf8(part).ok()?, 16).ok()
    };
    match b.len() {
        24 => Some(WalName::Segment {
            timeline: hex(0..8)?,
            log: hex(8..16)?,
            seg: hex(16..24)?,
        }),
        16 if name.ends_with(".history") => Some(WalName::History {
            timeline: hex(0..8)?,
        }),
        32 if name.ends_with(".partial") => Some(WalName::Partial {
            timeline: hex(0..8)?,
            log: hex(8..16)?,
            seg: hex(16..24)?,
        }),
        40 if b.get(24) == Some(&b'.') && name.ends_with(".backup") => Some(WalName::Backup {
            timeline: hex(0..8)?,
            log: hex(8..16)?,
            seg: hex(16..24)?,
            offset: hex(25..33)?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB16: u64 = 16 << 20;

    #[test]
    fn parses_every_kind_and_displays_it_back() {
        let cases = [
            (
                "000000010000000000000003",
                WalName::Segment {
                    timeline: 1,
                    log: 0,
                    seg: 3,
                },
            ),
            (
                "0000000A00000B2C000000FF",
                WalName::Segment {
                    timeline: 10,
                    log: 0xB2C,
                    seg: 0xFF,
                },
            ),
            (
                "FFFFFFFFFFFFFFFFFFFFFFFF",
                WalName::Segment {
                    timeline: u32::MAX,
                    log: u32::MAX,
                    seg: u32::MAX,
                },
            ),
            ("00000002.history", WalName::History { timeline: 2 }),
            ("0000ABCD.history", WalName::History { timeline: 0xABCD }),
            (
                "000000010000000000000002.00000028.backup",
                WalName::Backup {
                    timeline: 1,
                    log: 0,
                    seg: 2,
                    offset: 0x28,
                },
            ),
            (
                "00000001000000000000000A.partial",
                WalName::Partial {
                    timeline: 1,
                    log: 0,
                    seg: 10,
                },
            ),
        ];
        for (text, want) in cases {
            let got = WalName::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text);
            assert_eq!(text.parse::<WalName>().unwrap(), want);
        }
    }

    #[test]
    fn rejects_what_barman_rejects_and_lowercase() {
        let bad = [
            "",
            "00000001000000000000000",   // 23 digits
            "0000000100000000000000030", // 25 digits
            "00000001000000000000000G",
            "00000001.History",
            "0000001.history",
            "000000001.history",
            "00000001000000000000000A.history",
            "00000001000000000000000A.Partial",
            "00000001000000000000000A.partial.gz",
            "00000001000000000000000A.0000028.backup",
            "00000001000000000000000A.000000028.backup",
            "00000001000000000000000A-00000028.backup",
            "00000001000000000000000A.00000028.backup.gz",
            "00000001000000000000000A.0000002G.backup",
            "00000001000000000000000A.ready",
            "00000001000000000000000A\n",
            " 00000001000000000000000A",
            "+0000001000000000000000A",
            "RECOVERYHISTORY",
            "pg_wal/00000001000000000000000A",
            "ｆ0000001000000000000000A",
        ];
        for text in bad {
            assert!(WalName::parse(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn error_messages_say_what_is_wrong() {
        let lower = WalName::parse("00000001000000000000000a")
            .unwrap_err()
            .to_string();
        assert!(lower.contains("must be uppercase"), "{lower}");
        let path = WalName::parse("pg_wal/00000001000000000000000A")
            .unwrap_err()
            .to_string();
        assert!(path.contains("not a path"), "{path}");
        let other = WalName::parse("foo").unwrap_err().to_string();
        assert!(
            other.starts_with("\"foo\" is not a WAL file name"),
            "{other}"
        );
    }

    #[test]
    fn kinds_and_hash_dirs() {
        let seg = WalName::parse("0000000200000001000000FE").unwrap();
        assert!(seg.is_segment() && seg.has_page_headers());
        assert_eq!(seg.timeline(), 2);
        assert_eq!(seg.hash_dir().as_deref(), Some("0000000200000001"));

        let hist = WalName::parse("00000002.history").unwrap();
        assert!(hist.is_history() && !hist.has_page_headers());
        assert_eq!(hist.hash_dir(), None);
        assert_eq!(hist.segment(), None);

        let backup = WalName::parse("0000000200000001000000FE.00000028.backup").unwrap();
        assert!(backup.is_backup() && !backup.has_page_headers());
        assert_eq!(backup.hash_dir().as_deref(), Some("0000000200000001"));
        assert_eq!(backup.segment(), Some(seg));

        let partial = WalName::parse("0000000200000001000000FE.partial").unwrap();
        assert!(partial.is_partial() && partial.has_page_headers());
        assert_eq!(partial.hash_dir().as_deref(), Some("0000000200000001"));
        assert_eq!(partial.segment(), Some(seg));
    }

    #[test]
    fn segment_sizes() {
        for ok in [1 << 20, 2 << 20, 16 << 20, 64 << 20, 1 << 30] {
            assert!(is_valid_segment_size(ok), "{ok}");
        }
        for bad in [0, 1, 8192, (1 << 20) - 1, 3 << 20, 2 << 30, u64::MAX] {
            assert!(!is_valid_segment_size(bad), "{bad}");
        }
        assert_eq!(segments_per_xlog_id(16 << 20), Some(256));
        assert_eq!(segments_per_xlog_id(1 << 20), Some(4096));
        assert_eq!(segments_per_xlog_id(1 << 30), Some(4));
        assert_eq!(segments_per_xlog_id(3 << 20), None);
    }

    #[test]
    fn next_segment_rolls_over_like_postgres() {
        // (size, name, next)
        let cases = [
            (
                MIB16,
                "000000010000000000000001",
                "000000010000000000000002",
            ),
            (
                MIB16,
                "0000000100000000000000FE",
                "0000000100000000000000FF",
            ),
            (
                MIB16,
                "0000000100000000000000FF",
                "000000010000000100000000",
            ),
            (
                MIB16,
                "00000003000000AB000000FF",
                "00000003000000AC00000000",
            ),
            (
                1 << 20,
                "0000000100000000000000FF",
                "000000010000000000000100",
            ),
            (
                1 << 20,
                "000000010000000000000FFF",
                "000000010000000100000000",
            ),
            (
                64 << 20,
                "00000001000000000000003F",
                "000000010000000100000000",
            ),
            (
                1 << 30,
                "000000010000000000000003",
                "000000010000000100000000",
            ),
        ];
        for (size, from, want) in cases {
            let got = WalName::parse(from).unwrap().next_segment(size);
            assert_eq!(
                got.map(|n| n.to_string()).as_deref(),
                Some(want),
                "{from} @ {size}"
            );
        }
    }

    #[test]
    fn next_segment_refuses_what_has_no_successor() {
        // Segment 0x100 does not exist with 16 MiB segments.
        assert_eq!(
            WalName::parse("000000010000000000000100")
                .unwrap()
                .next_segment(MIB16),
            None
        );
        // The last segment a 64-bit LSN can address.
        assert_eq!(
            WalName::parse("00000001FFFFFFFF000000FF")
                .unwrap()
                .next_segment(MIB16),
            None
        );
        // Invalid size.
        assert_eq!(
            WalName::parse("000000010000000000000001")
                .unwrap()
                .next_segment(3 << 20),
            None
        );
        // Only plain segments have a successor.
        for other in [
            "00000002.history",
            "000000010000000000000001.partial",
            "000000010000000000000001.00000028.backup",
        ] {
            assert_eq!(
                WalName::parse(other).unwrap().next_segment(MIB16),
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn segment_numbers_round_trip() {
        let name = WalName::parse("00000001000000020000000A").unwrap();
        assert_eq!(name.segment_number(MIB16), Some(2 * 256 + 10));
        assert_eq!(name.start_lsn(MIB16), Some(0x2_0A00_0000));
        assert_eq!(format_lsn(name.start_lsn(MIB16).unwrap()), "2/0A000000");
        assert_eq!(
            WalName::from_segment_number(1, 2 * 256 + 10, MIB16),
            Some(name)
        );
        for size in [1u64 << 20, 16 << 20, 1 << 30] {
            for n in [0u64, 1, 255, 256, 4095, 4096, 123_456, (1 << 32) - 1] {
                let name = WalName::from_segment_number(7, n, size).unwrap();
                assert_eq!(name.segment_number(size), Some(n), "{n} @ {size}");
                assert_eq!(name.start_lsn(size), Some(n * size));
            }
        }
        // Beyond the 64-bit LSN space.
        assert_eq!(WalName::from_segment_number(1, u64::MAX, MIB16), None);
        // .partial and .backup have the number of their segment; history none.
        let partial = WalName::parse("00000001000000020000000A.partial").unwrap();
        assert_eq!(partial.segment_number(MIB16), Some(2 * 256 + 10));
        assert_eq!(WalName::History { timeline: 1 }.segment_number(MIB16), None);
    }
}
