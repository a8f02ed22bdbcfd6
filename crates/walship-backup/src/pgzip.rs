//! gzip on several cores, as one gzip member (pigz's method).
//!
//! barman-cloud-restore reads a tar with Python's `tarfile` in stream mode (`r|gz`),
//! which decompresses exactly one gzip member: given a stream of several members (the
//! easy way to compress in parallel) it fails with "unexpected end of data" where the
//! first member ends (checked with Python 3.11). Instead the input is cut into
//! blocks, each block is deflated on a worker thread as raw deflate ending in a sync
//! flush (an empty stored block, so the next block starts on a byte boundary), with the
//! previous block's last 32 KiB as its dictionary so matches reach across the cut as in
//! one serial stream; the blocks are written in order behind one gzip header, the last
//! one finishing the stream, and the trailer carries the CRC-32 of the whole input,
//! combined from the blocks' own. Any gzip reader sees one ordinary member.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Input bytes per block. Big enough that the sync marker (5 bytes) and the restart
/// of the block's Huffman tables cost nothing measurable, small enough that blocks in
/// flight stay a few MiB.
pub const BLOCK: usize = 1 << 20;

/// deflate's window: what a block may refer back to.
const WINDOW: usize = 32 * 1024;

/// gzip's header: magic, deflate, no flags, no time, no extra flags, OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

struct Job {
    input: Vec<u8>,
    dictionary: Vec<u8>,
    last: bool,
    reply: SyncSender<io::Result<Deflated>>,
}

struct Deflated {
    /// The input, handed back so its allocation is used again.
    input: Vec<u8>,
    output: Vec<u8>,
    crc: Crc,
}

/// A gzip writer that deflates on `threads` worker threads; the compressed bytes are
/// written to `out` on the caller's thread, in order.
pub struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    block: Vec<u8>,
    /// The last [`WINDOW`] bytes of the block sent before `block`.
    window: Vec<u8>,
    jobs: Option<mpsc::Sender<Job>>,
    pending: VecDeque<Receiver<io::Result<Deflated>>>,
    /// Blocks in flight before the writer waits for the oldest.
    depth: usize,
    workers: Vec<JoinHandle<()>>,
    spare: Vec<Vec<u8>>,
    crc: Crc,
    started: bool,
}

impl<W: Write> ParallelGzip<W> {
    /// A writer at zlib `level` (0–9) using `threads` workers (at least one).
    pub fn new(out: W, level: u32, threads: usize) -> ParallelGzip<W> {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("gzip-{i}"))
                    .spawn(move || work(&rx, level))
                    .expect("a gzip worker thread starts")
            })
            .collect();
        ParallelGzip {
            out,
            level,
            block: Vec::with_capacity(BLOCK),
            window: Vec::new(),
            jobs: Some(tx),
            pending: VecDeque::new(),
            depth: threads * 2,
            workers,
            spare: Vec::new(),
            crc: Crc::new(),
            started: false,
        }
    }

    /// The writer the compressed stream goes to.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The compression level this writer was made with.
    pub fn level(&self) -> u32 {
        self.level
    }

    /// Sends the block being filled to a worker.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let fresh = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BLOCK));
        let input = std::mem::replace(&mut self.block, fresh);
        let dictionary = std::mem::take(&mut self.window);
        let tail = input.len().saturating_sub(WINDOW);
        self.window = if input.len() >= WINDOW {
            input[tail..].to_vec()
        } else {
            // A short block (a flush) leaves the window made of both.
            let mut joined = dictionary.clone();
            joined.extend_from_slice(&input);
            let cut = joined.len().saturating_sub(WINDOW);
            joined.split_off(cut)
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job {
            input,
            dictionary,
            last,
            reply,
        };
        self.jobs
            .as_ref()
            .expect("jobs are sent only before finish")
            .send(job)
            .map_err(|_| io::Error::other("the gzip workers stopped"))?;
        self.pending.push_back(answer);
        while self.pending.len() >= self.depth {
            self.write_oldest()?;
        }
        Ok(())
    }

    /// Waits for the oldest block in flight and writes it out.
    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(answer) = self.pending.pop_front() else {
            return Ok(());
        };
        let deflated = answer
            .recv()
            .map_err(|_| io::Error::other("a gzip worker stopped"))??;
        if !self.started {
            self.out.write_all(&HEADER)?;
            self.started = true;
        }
        self.out.write_all(&deflated.output)?;
        self.crc.combine(&deflated.crc);
        let mut input = deflated.input;
        input.clear();
        if self.spare.len() < 2 {
            self.spare.push(input);
        }
        Ok(())
    }

    /// Writes the rest of the stream and its trailer; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK {
            self.dispatch(false)?;
        }
        Ok(n)
    }

    /// Ends the block being filled with a sync flush and writes everything out.
    fn flush(&mut self) -> io::Result<()> {
        if !self.block.is_empty() {
            self.dispatch(false)?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.out.flush()
    }
}

/// A worker: deflates blocks until the writer is finished or dropped.
fn work(jobs: &Mutex<Receiver<Job>>, level: u32) {
    let mut deflate = Compress::new(Compression::new(level), false);
    loop {
        let job = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        deflate.reset();
        let result = deflate_block(&mut deflate, &job.input, &job.dictionary, job.last);
        let result = result.map(|output| {
            let mut crc = Crc::new();
            crc.update(&job.input);
            Deflated {
                input: job.input,
                output,
                crc,
            }
        });
        // The writer may be gone (an aborted tar); nothing waits for this block then.
        let _ = job.reply.send(result);
    }
}

/// `input` as raw deflate after `dictionary`, ending in a sync flush, or finishing the
/// stream when it is the `last` block.
fn deflate_block(
    deflate: &mut Compress,
    input: &[u8],
    dictionary: &[u8],
    last: bool,
) -> io::Result<Vec<u8>> {
    if !dictionary.is_empty() {
        deflate
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut output = Vec::with_capacity(input.len() / 2 + 64);
    let start = deflate.total_in();
    loop {
        if output.capacity() - output.len() < 64 {
            output.reserve(output.capacity().max(4096));
        }
        let consumed = (deflate.total_in() - start) as usize;
        let status = deflate
            .compress_vec(&input[consumed..], &mut output, flush)
            .map_err(io::Error::other)?;
        let consumed = (deflate.total_in() - start) as usize;
        let room_left = output.len() < output.capacity();
        match status {
            Status::StreamEnd => return Ok(output),
            // zlib: a flush is complete when it returns with output space left.
            Status::Ok | Status::BufError if consumed == input.len() && room_left && !last => {
                return Ok(output);
            }
            Status::Ok | Status::BufError => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Bytes that compress somewhat, with repeats far apart and across block cuts.
    fn sample(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                if (i / 4096) % 3 == 0 {
                    (i % 97) as u8
                } else {
                    (state % 16) as u8
                }
            })
            .collect()
    }

    fn gzip(data: &[u8], threads: usize, pieces: usize) -> Vec<u8> {
        let mut w = ParallelGzip::new(Vec::new(), 6, threads);
        for chunk in data.chunks(pieces.max(1)) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn the_output_is_one_gzip_member_that_a_single_member_reader_reads_whole() {
        let data = sample(3 * BLOCK + 12_345);
        for threads in [1, 2, 4] {
            let packed = gzip(&data, threads, 70_000);
            // GzDecoder stops after the first member: the whole input must be in it.
            let mut one = flate2::read::GzDecoder::new(&packed[..]);
            let mut back = Vec::new();
            one.read_to_end(&mut back).unwrap();
            assert_eq!(back.len(), data.len(), "threads {threads}");
            assert!(back == data, "threads {threads}: the bytes differ");
            // Nothing follows the member's trailer.
            let mut rest = Vec::new();
            one.into_inner().read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "{} bytes after the member", rest.len());
        }
    }

    #[test]
    fn the_same_input_gives_the_same_bytes_whatever_the_threads_and_about_the_serial_size() {
        let data = sample(2 * BLOCK + 777);
        let one = gzip(&data, 1, 4096);
        assert_eq!(one, gzip(&data, 3, 1 << 20));
        let mut serial = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        serial.write_all(&data).unwrap();
        let serial = serial.finish().unwrap();
        // The dictionary carries matches across the cuts: within 1 % of one stream.
        assert!(
            one.len() * 100 <= serial.len() * 101,
            "parallel {} vs serial {}",
            one.len(),
            serial.len()
        );
    }

    #[test]
    fn empty_input_and_flushes_make_valid_streams() {
        let empty = gzip(&[], 2, 1);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&empty[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());

        let mut w = ParallelGzip::new(Vec::new(), 6, 2);
        let data = sample(100_000);
        for chunk in data.chunks(9_000) {
            w.write_all(chunk).unwrap();
            w.flush().unwrap();
        }
        let packed = w.finish().unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data);
    }

    #[test]
    fn a_failing_inner_writer_fails_the_write_or_the_finish() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("store gone"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = ParallelGzip::new(Broken, 6, 2);
        let data = sample(6 * BLOCK);
        let wrote = w.write_all(&data);
        let failed = match wrote {
            Err(e) => e,
            Ok(()) => w.finish().err().expect("finish fails"),
        };
        assert_eq!(failed.to_string(), "store gone");
    }
}
