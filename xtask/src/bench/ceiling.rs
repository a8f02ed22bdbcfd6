//! The server's own ingest limit: the corpus PUT as-is by `parallel` threads over
//! plain HTTP, no compression, no checksum, no existence check. Nothing that ships
//! WAL through the same server can beat it, so walship's throughput divided by it
//! says how much is left on the table.

use std::fs;

use anyhow::{Context, Result, bail};

use super::env::Run;
use super::runner::per_segment;

/// Seconds to PUT every segment of the corpus with `parallel` threads.
pub fn ceiling(run: &Run<'_>, parallel: usize) -> Result<f64> {
    let corpus = &run.env.corpus;
    let measured = per_segment(&corpus.names, parallel, |name| {
        // Each tool reads the segment too (from the page cache, warm after the
        // first run), so the ceiling does as well.
        let body = fs::read(corpus.path(name)).with_context(|| format!("reading {name}"))?;
        match run
            .env
            .s3
            .put_object(&run.bucket, &format!("ceiling/{name}"), &body)?
        {
            200 => Ok(()),
            status => bail!("a ceiling PUT of {name} got HTTP {status}"),
        }
    })?;
    Ok(measured.seconds)
}
