//! The server's own ingest limit: the corpus PUT as-is by `parallel` threads over
//! plain HTTP, no compression, no checksum, no existence check. Nothing that ships
//! WAL through the same server can beat it, so walship's throughput divided by it
//! says how much is left on the table.

use std::fs;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Instant;

use anyhow::{Result, bail};

use super::env::Run;

/// Seconds to PUT every segment of the corpus with `parallel` threads.
pub fn ceiling(run: &Run<'_>, parallel: usize) -> Result<f64> {
    let corpus = &run.env.corpus;
    let next = AtomicUsize::new(0);
    let failure = Mutex::new(None);
    let start = Instant::now();
    thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(name) = corpus.names.get(i) else {
                        break;
                    };
                    // Each tool reads the segment too (from the page cache, warm
                    // after the first run), so the ceiling does as well.
                    let body = match fs::read(corpus.path(name)) {
                        Ok(body) => body,
                        Err(e) => {
                            failure
                                .lock()
                                .unwrap()
                                .get_or_insert(format!("{name}: {e}"));
                            break;
                        }
                    };
                    let key = format!("ceiling/{name}");
                    match run.env.s3.put_object(&run.bucket, &key, &body) {
                        Ok(200) => {}
                        Ok(status) => {
                            failure
                                .lock()
                                .unwrap()
                                .get_or_insert(format!("HTTP {status}"));
                            break;
                        }
                        Err(e) => {
                            failure.lock().unwrap().get_or_insert(format!("{e:#}"));
                            break;
                        }
                    }
                }
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    if let Some(e) = failure.into_inner().unwrap() {
        bail!("a ceiling PUT failed: {e}");
    }
    Ok(seconds)
}
