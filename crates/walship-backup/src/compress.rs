//! The compressions barman-cloud-restore reads for base backups, as writers the tar
//! stream goes through: gzip, bzip2, snappy (the framed stream) and lz4 (a frame). The
//! compression is named only by the tar's extension (`data.tar.gz`), as barman names it.

use std::io::{self, Write};

use crate::pgzip::ParallelGzip;

/// How a backup's tars are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupCompression {
    None,
    Gzip,
    Bzip2,
    Snappy,
    Lz4,
}

impl BackupCompression {
    /// What follows `.tar` in the object's name.
    pub fn extension(self) -> &'static str {
        match self {
            BackupCompression::None => "",
            BackupCompression::Gzip => ".gz",
            BackupCompression::Bzip2 => ".bz2",
            BackupCompression::Snappy => ".snappy",
            BackupCompression::Lz4 => ".lz4",
        }
    }

    /// The compression of a tar object named `name`, if it is one.
    pub fn of_object(name: &str) -> Option<BackupCompression> {
        let (_, rest) = name.rsplit_once(".tar")?;
        Some(match rest {
            "" => BackupCompression::None,
            ".gz" => BackupCompression::Gzip,
            ".bz2" => BackupCompression::Bzip2,
            ".snappy" => BackupCompression::Snappy,
            ".lz4" => BackupCompression::Lz4,
            _ => return None,
        })
    }

    /// The plugin's `data.compression` value (and barman's flag names).
    pub fn from_name(name: &str) -> Option<BackupCompression> {
        Some(match name {
            "gzip" => BackupCompression::Gzip,
            "bzip2" => BackupCompression::Bzip2,
            "snappy" => BackupCompression::Snappy,
            "lz4" => BackupCompression::Lz4,
            _ => return None,
        })
    }

    /// A writer that compresses into `out`; [`Encoder::finish`] ends the stream. gzip
    /// deflates on `threads` cores ([`ParallelGzip`]); the others use one.
    pub fn writer<W: Write>(self, out: W, threads: usize) -> Encoder<W> {
        match self {
            BackupCompression::None => Encoder::None(out),
            // Level 6, zlib's default: barman's level 9 costs twice the CPU for a few
            // per cent of size on relation files.
            BackupCompression::Gzip => Encoder::Gzip(ParallelGzip::new(out, 6, threads)),
            BackupCompression::Bzip2 => Encoder::Bzip2(bzip2::write::BzEncoder::new(
                out,
                bzip2::Compression::new(9),
            )),
            BackupCompression::Snappy => {
                Encoder::Snappy(Box::new(snap::write::FrameEncoder::new(out)))
            }
            BackupCompression::Lz4 => Encoder::Lz4(lz4_flex::frame::FrameEncoder::new(out)),
        }
    }
}

/// A compressing writer.
pub enum Encoder<W: Write> {
    None(W),
    Gzip(ParallelGzip<W>),
    Bzip2(bzip2::write::BzEncoder<W>),
    Snappy(Box<snap::write::FrameEncoder<W>>),
    Lz4(lz4_flex::frame::FrameEncoder<W>),
}

impl<W: Write> Encoder<W> {
    /// The writer the compressed stream goes to.
    pub fn get_ref(&self) -> &W {
        match self {
            Encoder::None(w) => w,
            Encoder::Gzip(e) => e.get_ref(),
            Encoder::Bzip2(e) => e.get_ref(),
            Encoder::Snappy(e) => e.get_ref(),
            Encoder::Lz4(e) => e.get_ref(),
        }
    }

    /// Writes the stream's end and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Bzip2(e) => e.finish(),
            Encoder::Snappy(e) => e.into_inner().map_err(|e| e.into_error()),
            Encoder::Lz4(e) => e.finish().map_err(io::Error::other),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Bzip2(e) => e.write(buf),
            Encoder::Snappy(e) => e.write(buf),
            Encoder::Lz4(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Bzip2(e) => e.flush(),
            Encoder::Snappy(e) => e.flush(),
            Encoder::Lz4(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn every_compression_round_trips_and_is_named_by_its_extension() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [
            BackupCompression::None,
            BackupCompression::Gzip,
            BackupCompression::Bzip2,
            BackupCompression::Snappy,
            BackupCompression::Lz4,
        ] {
            let mut w = c.writer(Vec::new(), 2);
            w.write_all(&data).unwrap();
            let packed = w.finish().unwrap();
            let mut back = Vec::new();
            match c {
                BackupCompression::None => back = packed.clone(),
                BackupCompression::Gzip => {
                    flate2::read::GzDecoder::new(&packed[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
                BackupCompression::Bzip2 => {
                    bzip2::read::BzDecoder::new(&packed[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
                BackupCompression::Snappy => {
                    snap::read::FrameDecoder::new(&packed[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
                BackupCompression::Lz4 => {
                    lz4_flex::frame::FrameDecoder::new(&packed[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
            };
            assert_eq!(back, data, "{c:?}");
            let name = format!("data.tar{}", c.extension());
            assert_eq!(BackupCompression::of_object(&name), Some(c), "{name}");
        }
        assert_eq!(BackupCompression::of_object("backup.info"), None);
        assert_eq!(BackupCompression::of_object("data.tar.zst"), None);
        assert_eq!(
            BackupCompression::from_name("snappy"),
            Some(BackupCompression::Snappy)
        );
        assert_eq!(BackupCompression::from_name("zstd"), None);
    }
}
