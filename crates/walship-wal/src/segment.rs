//! The first page of a WAL segment: its long page header, and the checks that
//! tell a real PostgreSQL segment from a truncated, recycled, renamed or
//! foreign file before it is archived.
//!
//! Layouts and constants are PostgreSQL's `src/include/access/xlog_internal.h`.
//! barman-cloud-wal-archive performs none of these checks; walship does them
//! so that a bucket never holds a file PostgreSQL would refuse at restore.

use crate::error::WalError;
use crate::name::{WalName, is_valid_segment_size, segments_per_xlog_id};

/// `SizeOfXLogLongPHD`: the long page header that starts every segment,
/// `MAXALIGN`ed (the 36 bytes of fields padded to 40 on every platform
/// PostgreSQL supports, since `xlp_sysid` is 8-byte aligned).
pub const SIZE_OF_LONG_PAGE_HEADER: usize = 40;

/// The first record on the page continues one from the previous page.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// The page has the long header (`XLogLongPageHeaderData`); set on the
/// first page of every segment.
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// Backup blocks on this page are optional (`XLP_BKP_REMOVABLE`).
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// A missing continuation record was replaced by an
/// `XLOG_OVERWRITE_CONTRECORD` record. Added in PostgreSQL 14 and back-patched
/// to 10-13 in the August 2021 minor releases.
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// Every flag bit PostgreSQL defines (`XLP_ALL_FLAGS`); any other bit means
/// the page is not a WAL page header.
pub const XLP_ALL_FLAGS: u16 = 0x000F;

/// `XLOG_PAGE_MAGIC` of each PostgreSQL major release walship knows, with the
/// release as `server_version_num` with a zero minor (90500 for 9.5, 150000
/// for 15). The magic changes whenever the WAL format does, so it identifies
/// the major release that wrote a segment.
pub const XLOG_PAGE_MAGICS: &[(u16, u32)] = &[
    (0xD087, 90500),
    (0xD093, 90600),
    (0xD097, 100000),
    (0xD098, 110000),
    (0xD101, 120000),
    (0xD106, 130000),
    (0xD10D, 140000),
    (0xD110, 150000),
    (0xD113, 160000),
    (0xD116, 170000),
    (0xD118, 180000),
];

/// Smallest and largest `XLOG_BLCKSZ` PostgreSQL's configure accepts.
const MIN_BLOCK_SIZE: u32 = 1 << 10;
const MAX_BLOCK_SIZE: u32 = 1 << 16;

/// The PostgreSQL release (as `server_version_num` with a zero minor, e.g.
/// 150000) whose WAL carries `magic`, or `None` for an unknown magic.
pub fn pg_version_for_magic(magic: u16) -> Option<u32> {
    XLOG_PAGE_MAGICS
        .iter()
        .find(|&&(m, _)| m == magic)
        .map(|&(_, version)| version)
}

/// `XLogLongPageHeaderData`, decoded from its little-endian on-disk form.
/// (PostgreSQL writes WAL in the machine's byte order; every platform
/// walship runs on is little-endian.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPageHeader {
    /// `xlp_magic`: the WAL format version.
    pub magic: u16,
    /// `xlp_info`: flag bits (`XLP_*`).
    pub info: u16,
    /// `xlp_tli`: timeline of the first record on the page.
    pub tli: u32,
    /// `xlp_pageaddr`: the LSN of this page.
    pub pageaddr: u64,
    /// `xlp_rem_len`: bytes of a record continued from the previous page.
    pub rem_len: u32,
    /// `xlp_sysid`: the cluster's system identifier.
    pub sysid: u64,
    /// `xlp_seg_size`: the cluster's `wal_segment_size`.
    pub seg_size: u32,
    /// `xlp_xlog_blcksz`: the WAL block size the server was built with.
    pub xlog_blcksz: u32,
}

impl LongPageHeader {
    /// Decodes the first [`SIZE_OF_LONG_PAGE_HEADER`] bytes of `page`;
    /// `None` if `page` is shorter. Checks nothing else.
    pub fn parse(page: &[u8]) -> Option<LongPageHeader> {
        let header: &[u8; SIZE_OF_LONG_PAGE_HEADER] =
            page.get(..SIZE_OF_LONG_PAGE_HEADER)?.try_into().ok()?;
        Some(LongPageHeader {
            magic: u16::from_le_bytes(array(header, 0)),
            info: u16::from_le_bytes(array(header, 2)),
            tli: u32::from_le_bytes(array(header, 4)),
            pageaddr: u64::from_le_bytes(array(header, 8)),
            rem_len: u32::from_le_bytes(array(header, 16)),
            // Bytes 20..24 are alignment padding before the 8-byte xlp_sysid.
            sysid: u64::from_le_bytes(array(header, 24)),
            seg_size: u32::from_le_bytes(array(header, 32)),
            xlog_blcksz: u32::from_le_bytes(array(header, 36)),
        })
    }
}

/// `N` bytes of the header starting at `at`. Every caller passes a constant
/// range inside the 40-byte array, so the fallback is never taken; it exists
/// so that no code path can panic.
fn array<const N: usize>(header: &[u8; SIZE_OF_LONG_PAGE_HEADER], at: usize) -> [u8; N] {
    header
        .get(at..at + N)
        .and_then(|bytes| bytes.try_into().ok())
        .unwrap_or([0; N])
}

/// What the first page says about a segment that passed [`validate_segment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The PostgreSQL release that wrote it, as `server_version_num` with a
    /// zero minor (150000 for 15), from the page magic.
    pub pg_version: u32,
    /// The cluster's system identifier (`xlp_sysid`), the same for every
    /// segment of one cluster and its physical replicas.
    pub system_id: u64,
    /// `wal_segment_size`, equal to the file's length.
    pub seg_size: u64,
    /// `XLOG_BLCKSZ` (8192 unless PostgreSQL was built otherwise).
    pub block_size: u32,
    /// The timeline of the first record on the page. It may be lower than the
    /// name's timeline: the first segment of a new timeline starts with a
    /// page written on its parent.
    pub page_tli: u32,
}

/// Checks that a file PostgreSQL asked to archive as `name` is a WAL segment
/// of that name: `file_len` is its size and `first_page` at least its first
/// [`SIZE_OF_LONG_PAGE_HEADER`] bytes (more is fine and ignored).
///
/// Only segments and `.partial` files can be checked (a `.partial` is a
/// full-size, zero-padded segment); `.history` and `.backup` names give
/// [`WalError::NotASegment`]. The checks, in order: the size is a valid
/// `wal_segment_size`, the name's segment number exists at that size, the
/// header is present and not all zeros, the magic is one of
/// [`XLOG_PAGE_MAGICS`], `XLP_LONG_HEADER` is set and no unknown flag is,
/// the page's timeline is nonzero and not after the name's, `xlp_seg_size`
/// is the file size, `xlp_xlog_blcksz` is a power of two from 1 KiB to
/// 64 KiB, and `xlp_pageaddr` is the LSN at which the named segment starts.
pub fn validate_segment(
    name: &WalName,
    file_len: u64,
    first_page: &[u8],
) -> Result<SegmentInfo, WalError> {
    let display = || name.to_string();
    if !name.has_page_headers() {
        return Err(WalError::NotASegment { name: display() });
    }
    if !is_valid_segment_size(file_len) {
        return Err(WalError::BadFileSize {
            name: display(),
            len: file_len,
        });
    }
    let start_lsn = name.start_lsn(file_len);
    let Some(start_lsn) = start_lsn else {
        let (_, _, seg) = name.segment_parts().unwrap_or_default();
        let last = segments_per_xlog_id(file_len)
            .unwrap_or(1)
            .saturating_sub(1);
        return Err(WalError::SegmentOutOfRange {
            name: display(),
            seg,
            seg_size: file_len,
            last,
        });
    };
    let Some(header) = LongPageHeader::parse(first_page) else {
        return Err(WalError::ShortFirstPage {
            name: display(),
            len: first_page.len(),
            need: SIZE_OF_LONG_PAGE_HEADER,
        });
    };
    if first_page
        .iter()
        .take(SIZE_OF_LONG_PAGE_HEADER)
        .all(|&b| b == 0)
    {
        return Err(WalError::ZeroPage { name: display() });
    }
    let Some(pg_version) = pg_version_for_magic(header.magic) else {
        return Err(WalError::UnknownMagic {
            name: display(),
            magic: header.magic,
        });
    };
    if header.info & XLP_LONG_HEADER == 0 {
        return Err(WalError::BadPageInfo {
            name: display(),
            info: header.info,
            what: "XLP_LONG_HEADER is not set, so this is not the first page of a segment",
        });
    }
    if header.info & !XLP_ALL_FLAGS != 0 {
        return Err(WalError::BadPageInfo {
            name: display(),
            info: header.info,
            what: "bits outside XLP_ALL_FLAGS are set",
        });
    }
    let name_tli = name.timeline();
    if header.tli == 0 || header.tli > name_tli {
        return Err(WalError::TimelineMismatch {
            name: display(),
            page_tli: header.tli,
            name_tli,
        });
    }
    if u64::from(header.seg_size) != file_len {
        return Err(WalError::SegSizeMismatch {
            name: display(),
            header: header.seg_size,
            file_len,
        });
    }
    let block_size = header.xlog_blcksz;
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(WalError::BadBlockSize {
            name: display(),
            block_size,
        });
    }
    if header.pageaddr != start_lsn {
        return Err(WalError::PageAddrMismatch {
            name: display(),
            expected: start_lsn,
            found: header.pageaddr,
        });
    }
    Ok(SegmentInfo {
        pg_version,
        system_id: header.sysid,
        seg_size: file_len,
        block_size,
        page_tli: header.tli,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const SYSID: u64 = 0x6b06_c4e0_6836_d432;

    /// The pg15 fixtures: (file name, fixture file, timeline of the page).
    const PG15: &[(&str, &str, u32)] = &[
        (
            "000000010000000000000006",
            "000000010000000000000006.page",
            1,
        ),
        (
            "000000010000000000000007",
            "000000010000000000000007.page",
            1,
        ),
        (
            "000000010000000000000008",
            "000000010000000000000008.page",
            1,
        ),
        (
            "000000010000000000000009",
            "000000010000000000000009.page",
            1,
        ),
        (
            "00000001000000000000000A.partial",
            "00000001000000000000000A.partial.page",
            1,
        ),
        // The first segment of timeline 2 starts with a page written on 1.
        (
            "00000002000000000000000A",
            "00000002000000000000000A.page",
            1,
        ),
        (
            "00000002000000000000000B",
            "00000002000000000000000B.page",
            2,
        ),
        (
            "00000002000000000000000C",
            "00000002000000000000000C.page",
            2,
        ),
    ];

    fn page(file: &str) -> Vec<u8> {
        let path = format!("{}/testdata/pg15/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn name(text: &str) -> WalName {
        WalName::parse(text).unwrap()
    }

    /// A copy of segment 7's page with `edit` applied to it.
    fn edited(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut p = page("000000010000000000000007.page");
        edit(&mut p);
        p
    }

    fn validate7(p: &[u8]) -> Result<SegmentInfo, WalError> {
        validate_segment(&name("000000010000000000000007"), MIB, p)
    }

    #[test]
    fn every_pg15_fixture_validates() {
        for &(text, file, page_tli) in PG15 {
            let p = page(file);
            let info =
                validate_segment(&name(text), MIB, &p).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                info,
                SegmentInfo {
                    pg_version: 150000,
                    system_id: SYSID,
                    seg_size: MIB,
                    block_size: 8192,
                    page_tli,
                },
                "{text}"
            );
            // Only the header is needed.
            let short = validate_segment(&name(text), MIB, &p[..SIZE_OF_LONG_PAGE_HEADER]);
            assert_eq!(short.unwrap(), info, "{text}");
        }
    }

    #[test]
    fn header_fields_decode() {
        let h = LongPageHeader::parse(&page("000000010000000000000006.page")).unwrap();
        assert_eq!(
            h,
            LongPageHeader {
                magic: 0xD110,
                info: XLP_LONG_HEADER | XLP_BKP_REMOVABLE | XLP_FIRST_IS_CONTRECORD,
                tli: 1,
                pageaddr: 0x60_0000,
                rem_len: 0xD9,
                sysid: SYSID,
                seg_size: 1 << 20,
                xlog_blcksz: 8192,
            }
        );
        assert_eq!(LongPageHeader::parse(&[0; 39]), None);
        assert!(LongPageHeader::parse(&[0; 40]).is_some());
    }

    #[test]
    fn magic_table() {
        assert_eq!(pg_version_for_magic(0xD110), Some(150000));
        assert_eq!(pg_version_for_magic(0xD087), Some(90500));
        assert_eq!(pg_version_for_magic(0xD118), Some(180000));
        assert_eq!(pg_version_for_magic(0xD066), None);
        assert_eq!(pg_version_for_magic(0), None);
        // Strictly increasing in both columns: one magic per release.
        for pair in XLOG_PAGE_MAGICS.windows(2) {
            assert!(pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1, "{pair:?}");
        }
    }

    #[test]
    fn history_and_backup_are_not_segments() {
        let p = page("000000010000000000000006.page");
        for text in [
            "00000002.history",
            "000000010000000000000006.00000028.backup",
        ] {
            assert!(
                matches!(
                    validate_segment(&name(text), MIB, &p),
                    Err(WalError::NotASegment { .. })
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_file_sizes() {
        let p = page("000000010000000000000007.page");
        for len in [0, 8192, MIB - 1, MIB + 1, 3 * MIB, 2 << 30, u64::MAX] {
            let err = validate_segment(&name("000000010000000000000007"), len, &p);
            assert!(
                matches!(err, Err(WalError::BadFileSize { len: l, .. }) if l == len),
                "{len}: {err:?}"
            );
        }
    }

    #[test]
    fn segment_out_of_range() {
        // 1 MiB segments number 0x000..=0xFFF within a log file.
        let p = page("000000010000000000000007.page");
        let err = validate_segment(&name("000000010000000000001000"), MIB, &p).unwrap_err();
        assert!(
            matches!(
                err,
                WalError::SegmentOutOfRange {
                    seg: 0x1000,
                    last: 0xFFF,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("0xFFF"), "{err}");
    }

    #[test]
    fn short_and_zero_pages() {
        let p = page("000000010000000000000007.page");
        for len in [0, 1, 39] {
            let err = validate7(&p[..len]).unwrap_err();
            assert!(
                matches!(err, WalError::ShortFirstPage { len: l, need: 40, .. } if l == len),
                "{err:?}"
            );
        }
        let err = validate7(&[0; 8192]).unwrap_err();
        assert!(matches!(err, WalError::ZeroPage { .. }), "{err:?}");
    }

    #[test]
    fn wrong_magic_from_other_versions_and_garbage() {
        // A known magic from another release is accepted and reported.
        let p16 = edited(|p| p[..2].copy_from_slice(&0xD113u16.to_le_bytes()));
        assert_eq!(validate7(&p16).unwrap().pg_version, 160000);
        for magic in [0xD111u16, 0x0000, 0xFFFF, 0x10D1] {
            let p = edited(|p| p[..2].copy_from_slice(&magic.to_le_bytes()));
            let err = validate7(&p).unwrap_err();
            assert!(
                matches!(err, WalError::UnknownMagic { magic: m, .. } if m == magic),
                "{err:?}"
            );
        }
        // Text (e.g. a history file renamed to a segment name).
        let mut text = b"1\t0/A4E5F8\tno recovery target specified\n".to_vec();
        text.resize(8192, 0);
        assert!(matches!(
            validate7(&text),
            Err(WalError::UnknownMagic { .. })
        ));
    }

    #[test]
    fn bad_flags() {
        // A short header (an inner page) has no XLP_LONG_HEADER.
        let p = edited(|p| p[2] = 0x05);
        let err = validate7(&p).unwrap_err();
        assert!(
            matches!(err, WalError::BadPageInfo { info: 0x0005, what, .. } if what.contains("XLP_LONG_HEADER")),
            "{err:?}"
        );
        for info in [0x0012u16, 0x0102, 0x8002] {
            let p = edited(|p| p[2..4].copy_from_slice(&info.to_le_bytes()));
            let err = validate7(&p).unwrap_err();
            assert!(
                matches!(err, WalError::BadPageInfo { info: i, what, .. } if i == info && what.contains("XLP_ALL_FLAGS")),
                "{err:?}"
            );
        }
        // Every defined flag together is fine.
        let p = edited(|p| p[2..4].copy_from_slice(&XLP_ALL_FLAGS.to_le_bytes()));
        assert!(validate7(&p).is_ok());
    }

    #[test]
    fn timelines() {
        // Page timeline 2 in a timeline-1 segment.
        let p = edited(|p| p[4] = 2);
        let err = validate7(&p).unwrap_err();
        assert!(
            matches!(
                err,
                WalError::TimelineMismatch {
                    page_tli: 2,
                    name_tli: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        let p = edited(|p| p[4] = 0);
        assert!(matches!(
            validate7(&p),
            Err(WalError::TimelineMismatch { page_tli: 0, .. })
        ));
        // A timeline-1 page in a segment of a much later timeline is fine:
        // that is what the first segment after a promotion looks like.
        let p = page("00000002000000000000000A.page");
        let later = validate_segment(&name("00000009000000000000000A"), MIB, &p).unwrap();
        assert_eq!(later.page_tli, 1);
    }

    #[test]
    fn renamed_segment_has_wrong_page_address() {
        let p = page("000000010000000000000007.page");
        let err = validate_segment(&name("000000010000000000000008"), MIB, &p).unwrap_err();
        assert!(
            matches!(
                err,
                WalError::PageAddrMismatch {
                    expected: 0x80_0000,
                    found: 0x70_0000,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("0/00700000") && msg.contains("0/00800000"),
            "{msg}"
        );
        // The same segment number in another log file.
        let err = validate_segment(&name("000000010000000100000007"), MIB, &p).unwrap_err();
        assert!(matches!(err, WalError::PageAddrMismatch { .. }), "{err:?}");
    }

    #[test]
    fn segment_size_disagreement() {
        // The header says 1 MiB but the file is 16 MiB (e.g. a 1 MiB segment
        // padded or a header from another cluster).
        let p = page("000000010000000000000007.page");
        let err = validate_segment(&name("000000010000000000000007"), 16 * MIB, &p).unwrap_err();
        assert!(
            matches!(
                err,
                WalError::SegSizeMismatch {
                    header: 0x10_0000,
                    file_len: 0x100_0000,
                    ..
                }
            ),
            "{err:?}"
        );
        // A 16 MiB cluster's header at the right address validates.
        let p16 = edited(|p| {
            p[8..16].copy_from_slice(&(7 * 16 * MIB).to_le_bytes());
            p[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        });
        let info = validate_segment(&name("000000010000000000000007"), 16 * MIB, &p16).unwrap();
        assert_eq!(info.seg_size, 16 * MIB);
    }

    #[test]
    fn bad_block_sizes() {
        for bs in [0u32, 512, 3000, 8193, 1 << 17, u32::MAX] {
            let p = edited(|p| p[36..40].copy_from_slice(&bs.to_le_bytes()));
            let err = validate7(&p).unwrap_err();
            assert!(
                matches!(err, WalError::BadBlockSize { block_size, .. } if block_size == bs),
                "{bs}: {err:?}"
            );
        }
        for bs in [1024u32, 32768, 65536] {
            let p = edited(|p| p[36..40].copy_from_slice(&bs.to_le_bytes()));
            assert_eq!(validate7(&p).unwrap().block_size, bs);
        }
    }

    #[test]
    fn never_panics_on_arbitrary_pages() {
        // A cheap deterministic fuzz: random headers, lengths and names.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let base = page("000000010000000000000007.page");
        for _ in 0..20_000 {
            let mut p = base[..64].to_vec();
            let flips = next() % 4;
            for _ in 0..=flips {
                let at = (next() % 40) as usize;
                p[at] = next() as u8;
            }
            let len = (next() % 65) as usize;
            let seg = (next() % 0x2000) as u32;
            let n = WalName::Segment {
                timeline: (next() % 3) as u32,
                log: (next() % 2) as u32,
                seg,
            };
            let file_len = [MIB, 16 * MIB, next()][(next() % 3) as usize];
            let _ = validate_segment(&n, file_len, &p[..len]);
        }
    }
}
