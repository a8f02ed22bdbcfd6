//! The end of the tar → compress pipeline: a writer that cuts what it is given into
//! parts of one size and hands each to the uploader as soon as it is full, hashing the
//! whole object on the way, so a backup never holds more than the parts in flight.

use std::io::{self, Write};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

/// Where full parts go: `(index, body)`, in order. An error (the uploads failed, the
/// backup is being cancelled) ends the writing.
pub type PartSink<'a> = dyn FnMut(usize, Bytes) -> io::Result<()> + Send + 'a;

/// Cuts a stream into parts of `part_size` bytes (the last one shorter).
pub struct PartWriter<'a> {
    part_size: usize,
    buffer: BytesMut,
    next_index: usize,
    sink: Box<PartSink<'a>>,
    hasher: Sha256,
    total: u64,
}

/// What was written, once the stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub parts: usize,
    pub bytes: u64,
    /// Lower-case hex SHA-256 of every byte, in order.
    pub sha256: String,
}

impl<'a> PartWriter<'a> {
    pub fn new(part_size: usize, sink: Box<PartSink<'a>>) -> PartWriter<'a> {
        PartWriter {
            part_size: part_size.max(1),
            buffer: BytesMut::with_capacity(part_size.max(1)),
            next_index: 0,
            sink,
            hasher: Sha256::new(),
            total: 0,
        }
    }

    fn emit(&mut self) -> io::Result<()> {
        let body = self.buffer.split().freeze();
        // The next part's buffer: allocated now so the one just handed over can be
        // dropped by its uploader as soon as it is stored.
        self.buffer.reserve(self.part_size);
        let index = self.next_index;
        self.next_index += 1;
        (self.sink)(index, body)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.total
    }

    /// Hands over the last part (an empty stream is one empty part, so every object has
    /// at least one) and returns the figures.
    pub fn finish(mut self) -> io::Result<Written> {
        if !self.buffer.is_empty() || self.next_index == 0 {
            self.emit()?;
        }
        Ok(Written {
            parts: self.next_index,
            bytes: self.total,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }
}

impl Write for PartWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.part_size - self.buffer.len();
        let taken = &buf[..buf.len().min(room)];
        self.buffer.extend_from_slice(taken);
        self.hasher.update(taken);
        self.total += taken.len() as u64;
        if self.buffer.len() == self.part_size {
            self.emit()?;
        }
        Ok(taken.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_stream_is_cut_into_full_parts_in_order_and_hashed_whole() {
        let parts = Arc::new(Mutex::new(Vec::new()));
        let seen = parts.clone();
        let mut w = PartWriter::new(
            10,
            Box::new(move |i, body: Bytes| {
                seen.lock().unwrap().push((i, body.to_vec()));
                Ok(())
            }),
        );
        let data: Vec<u8> = (0..35u8).collect();
        w.write_all(&data[..7]).unwrap();
        w.write_all(&data[7..33]).unwrap();
        w.write_all(&data[33..]).unwrap();
        let written = w.finish().unwrap();
        let parts = parts.lock().unwrap();
        assert_eq!(
            parts.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(
            parts.iter().map(|(_, b)| b.len()).collect::<Vec<_>>(),
            [10, 10, 10, 5]
        );
        let joined: Vec<u8> = parts.iter().flat_map(|(_, b)| b.clone()).collect();
        assert_eq!(joined, data);
        assert_eq!(written.bytes, 35);
        assert_eq!(written.parts, 4);
        assert_eq!(written.sha256, hex::encode(Sha256::digest(&data)));
    }

    #[test]
    fn an_empty_stream_is_one_empty_part_and_a_failing_sink_stops_the_writing() {
        let count = Arc::new(Mutex::new(0));
        let c = count.clone();
        let w = PartWriter::new(
            4,
            Box::new(move |_, body: Bytes| {
                assert!(body.is_empty());
                *c.lock().unwrap() += 1;
                Ok(())
            }),
        );
        assert_eq!(w.finish().unwrap().parts, 1);
        assert_eq!(*count.lock().unwrap(), 1);

        let mut failing = PartWriter::new(4, Box::new(|_, _| Err(io::Error::other("store down"))));
        let err = failing.write_all(b"12345678").unwrap_err();
        assert_eq!(err.to_string(), "store down");
    }
}
