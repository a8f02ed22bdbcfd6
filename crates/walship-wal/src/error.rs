use std::io;

use crate::compression::Compression;
use crate::name::format_lsn;

/// Everything that can go wrong in this crate. Each variant names the file
/// (or codec) concerned and says what was found, so the message can go to
/// PostgreSQL's log as it is.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A name that is none of the four kinds barman-cloud accepts.
    #[error(
        "{name:?} is not a WAL file name: expected 24 uppercase hex digits (a segment), \
         optionally followed by \".partial\" or \".XXXXXXXX.backup\", or 8 uppercase hex \
         digits followed by \".history\"{hint}"
    )]
    InvalidName { name: String, hint: &'static str },

    /// `validate_segment` was asked about a `.history` or `.backup` file,
    /// which are text and have no page header.
    #[error("{name}: not a WAL segment; only segments and .partial files have a page header")]
    NotASegment { name: String },

    /// A `.history` file whose content is not a timeline history: PostgreSQL reads it
    /// back during recovery to choose timelines, so a garbled one is not archived.
    #[error(
        "{name}: not a timeline history file ({reason}); expected lines \
         \"<parent timeline> <switch LSN like 0/3000000> <reason>\" with increasing \
         timelines, all below {timeline}"
    )]
    BadHistory {
        name: String,
        timeline: u32,
        reason: &'static str,
    },

    /// The file cannot be a WAL segment because of its size.
    #[error(
        "{name}: file is {len} bytes; a WAL segment must be a power of two between 1 MiB \
         and 1 GiB (truncated?)"
    )]
    BadFileSize { name: String, len: u64 },

    /// The segment number in the name does not exist with this segment size
    /// (e.g. segment 0x100 with 16 MiB segments, where the last is 0xFF).
    #[error(
        "{name}: segment number {seg:#X} does not exist with {seg_size}-byte segments \
         (the last one in each log file is {last:#X})"
    )]
    SegmentOutOfRange {
        name: String,
        seg: u32,
        seg_size: u64,
        last: u64,
    },

    /// Fewer bytes of the first page than the long page header needs.
    #[error("{name}: only {len} bytes of the first page given; the long page header needs {need}")]
    ShortFirstPage {
        name: String,
        len: usize,
        need: usize,
    },

    /// The header bytes are all zero: a recycled or preallocated file that
    /// PostgreSQL never wrote.
    #[error(
        "{name}: the first page header is all zeros; PostgreSQL never wrote this file \
         (preallocated or recycled segment?)"
    )]
    ZeroPage { name: String },

    /// `xlp_magic` is none of the values PostgreSQL 9.5 to 18 write.
    #[error(
        "{name}: page magic {magic:#06X} is not a known PostgreSQL WAL magic (known: 9.5 to 18); \
         not a WAL segment, or a PostgreSQL version walship does not know yet"
    )]
    UnknownMagic { name: String, magic: u16 },

    /// `xlp_info` lacks `XLP_LONG_HEADER` or has bits PostgreSQL never sets.
    #[error("{name}: first page header flags {info:#06X} are invalid: {what}")]
    BadPageInfo {
        name: String,
        info: u16,
        what: &'static str,
    },

    /// `xlp_tli` is zero or greater than the timeline in the file name.
    #[error(
        "{name}: first page is on timeline {page_tli}, which cannot precede a segment of \
         timeline {name_tli}"
    )]
    TimelineMismatch {
        name: String,
        page_tli: u32,
        name_tli: u32,
    },

    /// `xlp_pageaddr` is not the start of the segment the name denotes.
    #[error(
        "{name}: first page address is {}, but this segment starts at {} \
         (renamed or misplaced file?)",
        format_lsn(*found),
        format_lsn(*expected)
    )]
    PageAddrMismatch {
        name: String,
        expected: u64,
        found: u64,
    },

    /// `xlp_seg_size` disagrees with the size of the file.
    #[error(
        "{name}: page header says segments are {header} bytes, but the file is {file_len} bytes"
    )]
    SegSizeMismatch {
        name: String,
        header: u32,
        file_len: u64,
    },

    /// `xlp_xlog_blcksz` is not a power of two PostgreSQL allows.
    #[error(
        "{name}: page header says WAL blocks are {block_size} bytes; PostgreSQL uses a power \
         of two between 1 KiB and 64 KiB"
    )]
    BadBlockSize { name: String, block_size: u32 },

    /// A codec failed while compressing.
    #[error("{codec} compression failed: {source}")]
    Compress {
        codec: Compression,
        #[source]
        source: io::Error,
    },

    /// A codec failed while decompressing (corrupt, truncated, or another format).
    #[error("{codec} decompression failed (corrupt, truncated or not {codec} data): {source}")]
    Decompress {
        codec: Compression,
        #[source]
        source: io::Error,
    },

    /// Reading the input or writing the output of a streaming
    /// (de)compression failed; the data itself may be fine.
    #[error("{codec}: {op} failed: {source}")]
    Io {
        codec: Compression,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// Decompressed output would exceed the limit; no WAL file is that large.
    #[error("{codec} data decompresses to more than {limit} bytes; no WAL file is that large")]
    DecompressedTooLarge { codec: Compression, limit: u64 },
}
