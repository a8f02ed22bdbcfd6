//! The six codecs barman-cloud-wal-archive offers, in the exact container
//! formats and at the levels barman writes (`barman/compression.py`,
//! `barman/clients/cloud_compression.py`, `barman/clients/cloud_walarchive.py`),
//! and decoders that accept everything barman writes.
//!
//! Decoding is hardened for untrusted objects: output is bounded
//! ([`MAX_DECOMPRESSED_LEN`]), xz gets a memory limit, and a stream that ends
//! early is an error rather than a short file, as far as each format allows.
//! (The snappy framing format has no end marker, so a snappy object cut at a
//! chunk boundary decodes to a prefix; python-snappy cannot tell either. The
//! segment-size check after decoding catches it.)

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read, Write};

use crate::error::WalError;

/// Largest output any decoder here may produce: the largest WAL segment
/// PostgreSQL allows (1 GiB) plus a margin. Anything bigger is not a WAL file
/// and is refused with [`WalError::DecompressedTooLarge`] before it fills a
/// disk or memory.
pub const MAX_DECOMPRESSED_LEN: u64 = (1 << 30) + (1 << 20);

/// Memory limit for the xz decoder. barman's level 3 needs a 4 MiB
/// dictionary and level 9 a 64 MiB one; an xz header asking for more is not
/// something barman wrote, and liblzma refuses it instead of allocating.
const XZ_MEMLIMIT: u64 = 256 << 20;

/// barman's default levels (`LEVEL_MEDIUM` of each compressor class).
const GZIP_LEVEL: u32 = 6;
const BZIP2_LEVEL: u32 = 5;
const XZ_PRESET: u32 = 3;
const ZSTD_LEVEL: i32 = 4;

/// Copy buffer size for streaming.
const CHUNK: usize = 64 * 1024;

/// A compression barman-cloud-wal-archive can apply to a WAL file; the
/// object key then ends in [`Compression::extension`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// gzip container (RFC 1952), level 6. Multi-member files are accepted.
    Gzip,
    /// bzip2, level 5. Multi-stream files are accepted.
    Bzip2,
    /// xz container, preset 3, CRC64 check. Concatenated streams are accepted.
    Xz,
    /// The snappy *framing* format (`ff 06 00 00 sNaPpY` stream identifier,
    /// 64 KiB chunks with masked CRC-32C), as python-snappy's
    /// `stream_compress` writes it; not raw snappy.
    Snappy,
    /// A zstd frame, level 4, without content size or checksum, as
    /// python-zstandard's `copy_stream` writes it. Several frames are accepted.
    Zstd,
    /// An lz4 frame with 64 KiB blocks and the content size in the header,
    /// as python-lz4's `lz4.frame.compress` writes it (python-lz4 uses level 6,
    /// an HC level; walship uses lz4's fast compressor and independent
    /// blocks, which every lz4 frame decoder reads).
    Lz4,
}

impl Compression {
    /// Every codec, in the order barman lists them.
    pub const ALL: [Compression; 6] = [
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Xz,
        Compression::Snappy,
        Compression::Zstd,
        Compression::Lz4,
    ];

    /// The name barman-cloud-wal-archive's `--compression`/the plugin's
    /// `wal.compression` use.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Snappy => "snappy",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
        }
    }

    /// The suffix barman appends to the WAL file name, with its dot
    /// (`ALLOWED_COMPRESSIONS` in `barman/cloud.py`).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => ".gz",
            Compression::Bzip2 => ".bz2",
            Compression::Xz => ".xz",
            Compression::Snappy => ".snappy",
            Compression::Zstd => ".zst",
            Compression::Lz4 => ".lz4",
        }
    }

    /// The codec called `name` (exactly as barman spells it).
    pub fn from_name(name: &str) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The codec whose extension is `ext`, with or without the leading dot.
    pub fn from_extension(ext: &str) -> Option<Compression> {
        let ext = ext.strip_prefix('.').unwrap_or(ext);
        Compression::ALL
            .into_iter()
            .find(|c| c.extension().get(1..) == Some(ext))
    }

    /// The magic bytes at the start of everything this codec writes
    /// (barman's `MAGIC` of each compressor class).
    pub fn magic(self) -> &'static [u8] {
        match self {
            Compression::Gzip => b"\x1f\x8b\x08",
            Compression::Bzip2 => b"BZh",
            Compression::Xz => b"\xfd7zXZ\x00",
            Compression::Snappy => b"\xff\x06\x00\x00sNaPpY",
            Compression::Zstd => b"\x28\xb5\x2f\xfd",
            Compression::Lz4 => b"\x04\x22\x4d\x18",
        }
    }

    /// The codec whose magic `data` starts with, as barman's
    /// `identify_compression` does; `None` for uncompressed WAL (whose pages
    /// start with `xlp_magic`, which matches none of these) and anything else.
    pub fn sniff(data: &[u8]) -> Option<Compression> {
        Compression::ALL
            .into_iter()
            .find(|c| data.starts_with(c.magic()))
    }

    /// Compresses `data` the way barman-cloud-wal-archive does.
    pub fn compress(&self, data: &[u8]) -> Result<Vec<u8>, WalError> {
        let len = u64::try_from(data.len()).ok();
        // A rough guess: WAL compresses well, and the Vec grows if needed.
        let out = Vec::with_capacity(data.len() / 4 + 64);
        self.compress_inner(data, out, len)
    }

    /// Streams `input` through the compressor into `output`, returning
    /// `output` once everything is written and the container finished.
    /// The same bytes as [`Compression::compress`], except that an lz4 frame
    /// does not record the content size (it is not known up front).
    pub fn compress_stream<R: Read, W: Write>(&self, input: R, output: W) -> Result<W, WalError> {
        self.compress_inner(input, output, None)
    }

    /// Decompresses a whole object. Fails on corrupt or truncated data, on
    /// data in another format, and when the output would exceed
    /// [`MAX_DECOMPRESSED_LEN`].
    pub fn decompress(&self, data: &[u8]) -> Result<Vec<u8>, WalError> {
        self.decompress_with_limit(data, MAX_DECOMPRESSED_LEN)
    }

    /// Streams the decompression of `input` into `output` and returns the
    /// number of bytes written, with the checks and the limit of
    /// [`Compression::decompress`]. On error, `output` may hold part of the
    /// data: write to a temporary file and rename it only on success.
    pub fn decompress_stream<R: Read, W: Write>(
        &self,
        input: R,
        output: W,
    ) -> Result<u64, WalError> {
        self.decompress_inner(input, output, MAX_DECOMPRESSED_LEN)
    }

    fn decompress_with_limit(&self, data: &[u8], limit: u64) -> Result<Vec<u8>, WalError> {
        let mut out = Vec::new();
        self.decompress_inner(data, &mut out, limit)?;
        Ok(out)
    }

    fn compress_inner<R: Read, W: Write>(
        &self,
        input: R,
        output: W,
        content_size: Option<u64>,
    ) -> Result<W, WalError> {
        let (read_failed, write_failed) = (Cell::new(false), Cell::new(false));
        let mut input = Watch {
            inner: input,
            failed: &read_failed,
        };
        let output = Watch {
            inner: output,
            failed: &write_failed,
        };
        let result = encode(*self, &mut input, output, content_size);
        result
            .map(|w| w.inner)
            .map_err(|source| self.io_error(source, &read_failed, &write_failed, false))
    }

    fn decompress_inner<R: Read, W: Write>(
        &self,
        input: R,
        output: W,
        limit: u64,
    ) -> Result<u64, WalError> {
        let (read_failed, write_failed) = (Cell::new(false), Cell::new(false));
        let mut input = NonEmpty {
            inner: Watch {
                inner: input,
                failed: &read_failed,
            },
            seen: false,
        };
        let mut output = Watch {
            inner: output,
            failed: &write_failed,
        };
        let copied = match decoder(*self, &mut input) {
            Ok(mut decoder) => copy_bounded(&mut decoder, &mut output, limit),
            Err(e) => Err(e),
        };
        let copied = copied.and_then(|n| output.flush().map(|()| n));
        match copied {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Err(WalError::DecompressedTooLarge {
                codec: *self,
                limit,
            }),
            Err(source) => Err(self.io_error(source, &read_failed, &write_failed, true)),
        }
    }

    /// Attributes an error to the input, the output, or the codec.
    fn io_error(
        &self,
        source: io::Error,
        read_failed: &Cell<bool>,
        write_failed: &Cell<bool>,
        decompressing: bool,
    ) -> WalError {
        let codec = *self;
        if read_failed.get() {
            WalError::Io {
                codec,
                op: "reading the input",
                source,
            }
        } else if write_failed.get() {
            WalError::Io {
                codec,
                op: "writing the output",
                source,
            }
        } else if decompressing {
            WalError::Decompress { codec, source }
        } else {
            WalError::Compress { codec, source }
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Compresses all of `input` into `out` and finishes the container.
fn encode<W: Write>(
    codec: Compression,
    input: &mut dyn Read,
    out: W,
    content_size: Option<u64>,
) -> io::Result<W> {
    match codec {
        Compression::Gzip => {
            // mtime 0 ("no time stamp") rather than now, so that the same
            // segment always compresses to the same bytes.
            let mut e = flate2::GzBuilder::new()
                .mtime(0)
                .write(out, flate2::Compression::new(GZIP_LEVEL));
            io::copy(input, &mut e)?;
            e.finish()
        }
        Compression::Bzip2 => {
            let mut e = bzip2::write::BzEncoder::new(out, bzip2::Compression::new(BZIP2_LEVEL));
            io::copy(input, &mut e)?;
            e.finish()
        }
        Compression::Xz => {
            let mut e = liblzma::write::XzEncoder::new(out, XZ_PRESET);
            io::copy(input, &mut e)?;
            e.finish()
        }
        Compression::Snappy => {
            let mut e = snap::write::FrameEncoder::new(Counted {
                inner: out,
                count: 0,
            });
            io::copy(input, &mut e)?;
            let mut out = e.into_inner().map_err(|e| e.into_error())?;
            // The encoder writes the stream identifier with the first chunk,
            // so empty input would give an empty object, which no reader can
            // tell from a failed upload. Write the identifier alone instead.
            if out.count == 0 {
                out.inner.write_all(Compression::Snappy.magic())?;
            }
            Ok(out.inner)
        }
        Compression::Zstd => {
            let mut e = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
            io::copy(input, &mut e)?;
            e.finish()
        }
        Compression::Lz4 => {
            use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
            let info = FrameInfo::new()
                .block_size(BlockSize::Max64KB)
                .block_mode(BlockMode::Independent)
                .content_size(content_size);
            let mut e = FrameEncoder::with_frame_info(info, out);
            io::copy(input, &mut e)?;
            e.finish().map_err(io::Error::from)
        }
    }
}

/// A reader that decodes `input` with `codec`.
fn decoder<'a, R: Read + 'a>(codec: Compression, input: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match codec {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(
                XZ_MEMLIMIT,
                liblzma::stream::CONCATENATED,
            )
            .map_err(io::Error::other)?;
            Box::new(liblzma::read::XzDecoder::new_stream(input, stream))
        }
        Compression::Snappy => Box::new(snap::read::FrameDecoder::new(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
        Compression::Lz4 => Box::new(Lz4Frames {
            decoder: Some(lz4_flex::frame::FrameDecoder::new(Lz4FrameCheck::new(
                io::BufReader::new(input),
            ))),
        }),
    })
}

/// Copies `from` into `to` until EOF; `Ok(None)` as soon as more than
/// `limit` bytes come out (without writing the excess).
fn copy_bounded(from: &mut dyn Read, to: &mut dyn Write, limit: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; CHUNK];
    let mut total: u64 = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(Some(total)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total = total.saturating_add(n as u64);
        if total > limit {
            return Ok(None);
        }
        to.write_all(buf.get(..n).unwrap_or_default())?;
    }
}

/// Counts the bytes written through it.
struct Counted<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Records in `failed` that the wrapped reader or writer returned an error,
/// so that an error coming out of a codec can be blamed on the right party.
struct Watch<'a, T> {
    inner: T,
    failed: &'a Cell<bool>,
}

impl<T> Watch<'_, T> {
    fn check<V>(&self, r: io::Result<V>) -> io::Result<V> {
        if let Err(e) = &r
            && e.kind() != io::ErrorKind::Interrupted
        {
            self.failed.set(true);
        }
        r
    }
}

impl<T: Read> Read for Watch<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        self.check(r)
    }
}

impl<T: Write> Write for Watch<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        self.check(r)
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        self.check(r)
    }
}

/// Fails with `UnexpectedEof` if the input is empty. Every codec's output is
/// at least a header long, so an empty object is never valid, yet some
/// decoders (snappy, lz4, zstd) would decode it to nothing.
struct NonEmpty<R> {
    inner: R,
    seen: bool,
}

impl<R: Read> Read for NonEmpty<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.seen = true;
        } else if !self.seen && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the compressed data is empty",
            ));
        }
        Ok(n)
    }
}

/// Decodes concatenated lz4 frames, as python-lz4's `lz4.frame.open` (what
/// barman reads with) does: lz4_flex's decoder stops after the first frame,
/// which would also silently ignore whatever follows it.
struct Lz4Frames<R: io::BufRead> {
    /// `None` once the input is exhausted.
    decoder: Option<lz4_flex::frame::FrameDecoder<Lz4FrameCheck<R>>>,
}

impl<R: io::BufRead> Read for Lz4Frames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while let Some(decoder) = self.decoder.as_mut() {
            let n = decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // The frame ended. lz4_flex reads exactly the bytes of a frame,
            // so anything left in the input is the start of another one.
            let Some(mut check) = self.decoder.take().map(|d| d.into_inner()) else {
                break;
            };
            if !check.inner.fill_buf()?.is_empty() {
                self.decoder = Some(lz4_flex::frame::FrameDecoder::new(check));
            }
        }
        Ok(0)
    }
}

/// lz4_flex's frame decoder treats the end of its input anywhere at a block
/// boundary (or inside a frame header) as a clean end of stream, so a
/// truncated object would decode to a prefix. This reader follows the frame
/// structure of the bytes passing through (frame descriptor, block sizes,
/// checksums, end mark) and turns an end of input inside a frame into an
/// error. It checks nothing else: the decoder validates the content.
struct Lz4FrameCheck<R> {
    inner: R,
    step: Lz4Step,
    /// A fixed-size field being collected.
    field: [u8; 4],
    have: usize,
    /// FLG byte of the current frame.
    flg: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lz4Step {
    /// Collecting a 4-byte magic number; with nothing collected, this is the
    /// only place an lz4 stream may end.
    Magic,
    /// Collecting FLG and BD.
    Descriptor,
    /// Skipping `left` bytes, then going to `BlockSize` or `Magic`.
    Skip { left: u64, then_block: bool },
    /// Collecting a 4-byte block size (0 is the end mark).
    BlockSize,
    /// Something other than a standard frame (legacy or skippable frame):
    /// not tracked, left to the decoder.
    Opaque,
}

const LZ4_MAGIC: u32 = 0x184D_2204;
const LZ4_FLG_BLOCK_CHECKSUM: u8 = 0x10;
const LZ4_FLG_CONTENT_SIZE: u8 = 0x08;
const LZ4_FLG_CONTENT_CHECKSUM: u8 = 0x04;
const LZ4_FLG_DICT_ID: u8 = 0x01;

impl<R> Lz4FrameCheck<R> {
    fn new(inner: R) -> Self {
        Lz4FrameCheck {
            inner,
            step: Lz4Step::Magic,
            field: [0; 4],
            have: 0,
            flg: 0,
        }
    }

    /// Advances over `data`, which just passed through.
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.step {
                Lz4Step::Opaque => return,
                Lz4Step::Skip { left, then_block } => {
                    let n = left.min(data.len() as u64);
                    // n <= data.len(), so this fits in usize.
                    data = data.get(n as usize..).unwrap_or_default();
                    let left = left - n;
                    self.step = if left > 0 {
                        Lz4Step::Skip { left, then_block }
                    } else if then_block {
                        Lz4Step::BlockSize
                    } else {
                        Lz4Step::Magic
                    };
                }
                Lz4Step::Magic | Lz4Step::Descriptor | Lz4Step::BlockSize => {
                    let need = if self.step == Lz4Step::Descriptor {
                        2
                    } else {
                        4
                    };
                    let take = (need - self.have).min(data.len());
                    let (head, rest) = data.split_at(take);
                    if let Some(dst) = self.field.get_mut(self.have..self.have + take) {
                        dst.copy_from_slice(head);
                    }
                    self.have += take;
                    data = rest;
                    if self.have == need {
                        self.have = 0;
                        self.field_done();
                    }
                }
            }
        }
    }

    fn field_done(&mut self) {
        let value = u32::from_le_bytes(self.field);
        self.step = match self.step {
            Lz4Step::Magic if value == LZ4_MAGIC => Lz4Step::Descriptor,
            Lz4Step::Magic => Lz4Step::Opaque,
            Lz4Step::Descriptor => {
                self.flg = self.field[0];
                let mut rest = 1; // header checksum
                if self.flg & LZ4_FLG_CONTENT_SIZE != 0 {
                    rest += 8;
                }
                if self.flg & LZ4_FLG_DICT_ID != 0 {
                    rest += 4;
                }
                Lz4Step::Skip {
                    left: rest,
                    then_block: true,
                }
            }
            Lz4Step::BlockSize if value == 0 => {
                if self.flg & LZ4_FLG_CONTENT_CHECKSUM != 0 {
                    Lz4Step::Skip {
                        left: 4,
                        then_block: false,
                    }
                } else {
                    Lz4Step::Magic
                }
            }
            Lz4Step::BlockSize => {
                let mut left = u64::from(value & 0x7FFF_FFFF);
                if self.flg & LZ4_FLG_BLOCK_CHECKSUM != 0 {
                    left += 4;
                }
                Lz4Step::Skip {
                    left,
                    then_block: true,
                }
            }
            other => other,
        };
    }

    fn at_clean_end(&self) -> bool {
        matches!(self.step, Lz4Step::Opaque) || (self.step == Lz4Step::Magic && self.have == 0)
    }
}

impl<R: Read> Read for Lz4FrameCheck<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.at_clean_end() {
            // Not UnexpectedEof: lz4_flex takes that for a clean end.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "lz4 data ends inside a frame (truncated)",
            ));
        }
        self.feed(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What testdata/make_fixtures.py compresses.
    fn payload() -> Vec<u8> {
        let mut buf = vec![0u8; 200_000];
        for page in (0..buf.len()).step_by(8192) {
            buf[page..page + 8].copy_from_slice(&[0x18, 0xD1, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00]);
            let text = format!("walship fixture page {} ", page / 8192).repeat(4);
            buf[page + 40..page + 40 + text.len()].copy_from_slice(text.as_bytes());
        }
        buf
    }

    fn fixture(file: &str) -> Vec<u8> {
        let path = format!("{}/testdata/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn fixture_for(c: Compression) -> Vec<u8> {
        fixture(&format!("payload{}", c.extension()))
    }

    #[test]
    fn payload_matches_the_python_generator() {
        let p = payload();
        assert_eq!(p.len(), 200_000);
        assert_eq!(&p[8192 + 40..8192 + 63], b"walship fixture page 1 ");
    }

    #[test]
    fn names_and_extensions_are_barmans() {
        let table = [
            (Compression::Gzip, "gzip", ".gz"),
            (Compression::Bzip2, "bzip2", ".bz2"),
            (Compression::Xz, "xz", ".xz"),
            (Compression::Snappy, "snappy", ".snappy"),
            (Compression::Zstd, "zstd", ".zst"),
            (Compression::Lz4, "lz4", ".lz4"),
        ];
        assert_eq!(Compression::ALL.len(), table.len());
        for (c, name, ext) in table {
            assert_eq!(c.name(), name);
            assert_eq!(c.to_string(), name);
            assert_eq!(c.extension(), ext);
            assert_eq!(Compression::from_name(name), Some(c));
            assert_eq!(Compression::from_extension(ext), Some(c));
            assert_eq!(Compression::from_extension(&ext[1..]), Some(c));
        }
        for bad in ["", "gz", "GZIP", "zst", "pigz", "pygzip", "custom", "none"] {
            assert_eq!(Compression::from_name(bad), None, "{bad}");
        }
        for bad in ["", ".", ".gzip", ".zstd", ".GZ", ".bz", "..gz", ".tar"] {
            assert_eq!(Compression::from_extension(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_barman_fixture_decompresses_to_the_payload() {
        let want = payload();
        for c in Compression::ALL {
            let data = fixture_for(c);
            assert_eq!(Compression::sniff(&data), Some(c), "{c}");
            let got = c.decompress(&data).unwrap_or_else(|e| panic!("{c}: {e}"));
            assert!(got == want, "{c}: wrong output ({} bytes)", got.len());
            let mut streamed = Vec::new();
            let n = c.decompress_stream(&data[..], &mut streamed).unwrap();
            assert_eq!(n, want.len() as u64);
            assert!(streamed == want, "{c}");
        }
        let multi = fixture("payload-multi.gz");
        assert!(Compression::Gzip.decompress(&multi).unwrap() == want);
    }

    #[test]
    fn round_trip_every_codec() {
        let inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"x".to_vec(),
            payload(),
            // Incompressible data over several snappy chunks / lz4 blocks.
            (0..300_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ];
        for c in Compression::ALL {
            for input in &inputs {
                let packed = c.compress(input).unwrap();
                assert_eq!(Compression::sniff(&packed), Some(c), "{c}");
                let back = c.decompress(&packed).unwrap_or_else(|e| panic!("{c}: {e}"));
                assert!(back == *input, "{c}: {} bytes", input.len());
                let streamed = c.compress_stream(&input[..], Vec::new()).unwrap();
                assert!(c.decompress(&streamed).unwrap() == *input, "{c}");
            }
        }
    }

    #[test]
    fn output_has_barmans_container_details() {
        let p = payload();
        // gzip: deflate, no file name, level 6 (XFL 0), OS unknown.
        let gz = Compression::Gzip.compress(&p).unwrap();
        assert_eq!(&gz[..4], b"\x1f\x8b\x08\x00");
        assert_eq!(&gz[8..10], b"\x00\xff");
        // gzip output is deterministic.
        assert_eq!(gz, Compression::Gzip.compress(&p).unwrap());
        // bzip2 level 5: "BZh5".
        assert_eq!(&Compression::Bzip2.compress(&p).unwrap()[..4], b"BZh5");
        // lz4: FLG version 01, content size present; BD 64 KiB blocks;
        // content size 200000 little-endian.
        let lz4 = Compression::Lz4.compress(&p).unwrap();
        assert_eq!(lz4[4] & 0xC8, 0x48);
        assert_eq!(lz4[5], 0x40);
        assert_eq!(&lz4[6..14], &200_000u64.to_le_bytes());
        // zstd: like python-zstandard's copy_stream, no content size or
        // checksum in the frame header descriptor, same as the fixture.
        let zst = Compression::Zstd.compress(&p).unwrap();
        assert_eq!(zst[4] & 0xC4, fixture_for(Compression::Zstd)[4] & 0xC4);
        // snappy: the stream identifier, then a compressed chunk.
        let sn = Compression::Snappy.compress(&p).unwrap();
        assert_eq!(&sn[..10], Compression::Snappy.magic());
        assert_eq!(sn[10], 0x00);
    }

    #[test]
    fn sniff_ignores_raw_wal_and_junk() {
        let page = fixture("pg15/000000010000000000000006.page");
        assert_eq!(Compression::sniff(&page), None);
        assert_eq!(Compression::sniff(b""), None);
        assert_eq!(Compression::sniff(b"\x1f\x8b"), None);
        assert_eq!(Compression::sniff(b"1\t0/A4E5F8\tno recovery target"), None);
    }

    #[test]
    fn empty_input_is_an_error_for_every_codec() {
        for c in Compression::ALL {
            let err = c.decompress(b"").unwrap_err();
            assert!(
                matches!(err, WalError::Decompress { codec, .. } if codec == c),
                "{c}: {err:?}"
            );
        }
    }

    #[test]
    fn truncated_input_is_an_error() {
        for c in Compression::ALL {
            let data = fixture_for(c);
            let mut cuts: Vec<usize> = (1..data.len().min(64)).collect();
            cuts.extend([data.len() / 2, data.len() - 4, data.len() - 1]);
            if c == Compression::Snappy {
                // The framing format has no end mark: a cut at a chunk
                // boundary is undetectable (by python-snappy too), so only
                // cuts inside a chunk are tested.
                let boundaries = snappy_chunk_boundaries(&data);
                cuts.retain(|n| !boundaries.contains(n));
            }
            for n in cuts {
                let result = c.decompress(&data[..n]);
                assert!(
                    matches!(result, Err(WalError::Decompress { codec, .. }) if codec == c),
                    "{c} cut at {n} of {}: {:?}",
                    data.len(),
                    result.map(|v| v.len())
                );
            }
        }
    }

    /// Offsets at which a snappy framing stream can end without error.
    fn snappy_chunk_boundaries(data: &[u8]) -> Vec<usize> {
        let mut at = 0;
        let mut out = Vec::new();
        while let Some(h) = data.get(at..at + 4) {
            at += 4 + (usize::from(h[1]) | usize::from(h[2]) << 8 | usize::from(h[3]) << 16);
            out.push(at);
        }
        out
    }

    #[test]
    fn lz4_truncation_at_every_block_boundary_is_caught() {
        // Multi-block frames, with and without checksums, cut at every byte.
        let packed = Compression::Lz4.compress(&payload()).unwrap();
        // 200,000 bytes in 64 KiB blocks.
        assert!(packed.len() < 4096, "{}", packed.len());
        for n in 0..packed.len() {
            assert!(
                Compression::Lz4.decompress(&packed[..n]).is_err(),
                "cut at {n}"
            );
        }
        // python-lz4's own output (linked blocks).
        let python = fixture_for(Compression::Lz4);
        for n in 0..python.len() {
            assert!(
                Compression::Lz4.decompress(&python[..n]).is_err(),
                "python cut at {n}"
            );
        }
        use lz4_flex::frame::{FrameEncoder, FrameInfo};
        let info = FrameInfo::new()
            .block_checksums(true)
            .content_checksum(true)
            .content_size(Some(7));
        let mut e = FrameEncoder::with_frame_info(info, Vec::new());
        e.write_all(b"walship").unwrap();
        let packed = e.finish().unwrap();
        assert_eq!(Compression::Lz4.decompress(&packed).unwrap(), b"walship");
        for n in 0..packed.len() {
            assert!(
                Compression::Lz4.decompress(&packed[..n]).is_err(),
                "cut at {n}"
            );
        }
        // Two frames back to back decode to both contents.
        let mut two = Compression::Lz4.compress(b"wal").unwrap();
        two.extend(Compression::Lz4.compress(b"ship").unwrap());
        assert_eq!(Compression::Lz4.decompress(&two).unwrap(), b"walship");
    }

    #[test]
    fn corrupt_input_is_an_error() {
        for c in Compression::ALL {
            let data = fixture_for(c);
            // Flip bytes all over the object. A flip may not change the output
            // (e.g. a copy offset inside a run of zeros), but codecs with a
            // checksum of the content (all but barman's zstd and lz4, which
            // write none) must never return different data.
            let checksummed = !matches!(c, Compression::Zstd | Compression::Lz4);
            let mut errors = 0;
            for at in (0..data.len()).step_by(7) {
                let mut bad = data.clone();
                bad[at] ^= 0x55;
                match c.decompress(&bad) {
                    Err(WalError::Decompress { .. }) => errors += 1,
                    Err(e) => panic!("{c} flip at {at}: {e:?}"),
                    Ok(out) => assert!(!checksummed || out == payload(), "{c} flip at {at}"),
                }
            }
            assert!(errors > data.len() / 7 / 4, "{c}: only {errors} errors");
            // Trailing garbage after the stream.
            let mut trailing = data.clone();
            trailing.extend_from_slice(b"garbage!");
            assert!(
                c.decompress(&trailing).is_err(),
                "{c} with trailing garbage"
            );
            // Another codec's data.
            for other in Compression::ALL.into_iter().filter(|&o| o != c) {
                assert!(c.decompress(&fixture_for(other)).is_err(), "{other} as {c}");
            }
            // Uncompressed WAL.
            let page = fixture("pg15/000000010000000000000006.page");
            assert!(c.decompress(&page).is_err(), "raw WAL as {c}");
        }
    }

    #[test]
    fn output_is_bounded() {
        let p = payload();
        for c in Compression::ALL {
            let data = fixture_for(c);
            let exact = c.decompress_with_limit(&data, p.len() as u64).unwrap();
            assert_eq!(exact.len(), p.len(), "{c}");
            let err = c
                .decompress_with_limit(&data, p.len() as u64 - 1)
                .unwrap_err();
            assert!(
                matches!(err, WalError::DecompressedTooLarge { codec, limit } if codec == c && limit == p.len() as u64 - 1),
                "{c}: {err:?}"
            );
            assert!(err.to_string().contains("199999"), "{err}");
        }
        // A small object that expands enormously (a "zip bomb") stops at the
        // limit instead of filling memory.
        let zeros = vec![0u8; 4 << 20];
        let bomb = Compression::Zstd.compress(&zeros).unwrap();
        assert!(bomb.len() < 1024, "{}", bomb.len());
        assert!(matches!(
            Compression::Zstd.decompress_with_limit(&bomb, 1 << 20),
            Err(WalError::DecompressedTooLarge { .. })
        ));
        const { assert!(MAX_DECOMPRESSED_LEN > 1 << 30) };
    }

    #[test]
    fn stream_errors_blame_the_right_side() {
        #[derive(Debug)]
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        for c in Compression::ALL {
            let err = c.compress_stream(Broken, Vec::new()).unwrap_err();
            assert!(
                matches!(
                    err,
                    WalError::Io {
                        op: "reading the input",
                        ..
                    }
                ),
                "{c}: {err:?}"
            );
            let err = c.compress_stream(&payload()[..], Broken).unwrap_err();
            assert!(
                matches!(
                    err,
                    WalError::Io {
                        op: "writing the output",
                        ..
                    }
                ),
                "{c}: {err:?}"
            );
            let err = c.decompress_stream(Broken, Vec::new()).unwrap_err();
            assert!(
                matches!(
                    err,
                    WalError::Io {
                        op: "reading the input",
                        ..
                    }
                ),
                "{c}: {err:?}"
            );
            let err = c
                .decompress_stream(&fixture_for(c)[..], Broken)
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    WalError::Io {
                        op: "writing the output",
                        ..
                    }
                ),
                "{c}: {err:?}"
            );
        }
    }

    #[test]
    fn never_panics_on_mutated_objects() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for c in Compression::ALL {
            let base = c.compress(&payload()[..20_000]).unwrap();
            for _ in 0..300 {
                let mut data = base.clone();
                for _ in 0..=(next() % 3) {
                    let at = (next() % data.len() as u64) as usize;
                    data[at] = next() as u8;
                }
                let cut = (next() % (data.len() as u64 + 1)) as usize;
                let _ = c.decompress_with_limit(&data[..cut], 1 << 20);
            }
        }
    }
}
