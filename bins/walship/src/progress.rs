//! How a long command (`backup`, `restore`, `backup-delete`) says where it stands: a
//! progress bar with the amount, rate and time left when stderr is a terminal, and a log
//! line with the same figures every 5 seconds otherwise (`kubectl logs`, a file).
//!
//! While a bar is drawn, every log line goes out through [`write_stderr`], which lifts
//! the bar, writes the line and draws the bar again below it, so the two never share a
//! line of the terminal.
//!
//! Dependency: `indicatif` (the bar: redraws limited to the terminal's pace, the rate
//! and time left smoothed, the width of the terminal followed).

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::info;

/// The bar being drawn, if any: the log writer lifts it for each line.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// How often a log line reports when there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// How often the figures are read for the bar.
const BAR_EVERY: Duration = Duration::from_millis(200);

/// What the figures count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Objects,
}

/// Writes one finished log line to stderr, under the bar when one is drawn.
pub fn write_stderr(line: &[u8]) {
    let bar = BAR.lock().unwrap_or_else(PoisonError::into_inner).clone();
    match bar {
        Some(bar) => bar.suspend(|| {
            let _ = std::io::stderr().lock().write_all(line);
        }),
        None => {
            let _ = std::io::stderr().lock().write_all(line);
        }
    }
}

/// A running report; dropping it stops the report and clears the bar.
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            *BAR.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }
}

/// Starts reporting `what` (e.g. "backup: read"): `figures` gives what is done, the
/// total (0 while unknown) and an extra text for the end of the line.
pub fn start(
    what: &'static str,
    unit: Unit,
    figures: impl Fn() -> (u64, u64, String) + Send + 'static,
) -> Reporter {
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let template = match unit {
            Unit::Bytes => {
                "{prefix} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {eta} left{msg}"
            }
            Unit::Objects => "{prefix} {wide_bar} {pos}/{len} {per_sec} {eta} left{msg}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_prefix(what);
        *BAR.lock().unwrap_or_else(PoisonError::into_inner) = Some(bar.clone());
        let drawn = bar.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(BAR_EVERY);
            loop {
                tick.tick().await;
                let (done, total, extra) = figures();
                // An empty bar, not a full one, while the total is not known yet (a
                // backup waits for its checkpoint before it sizes the data directory).
                if total == 0 {
                    drawn.unset_length();
                } else {
                    drawn.set_length(total.max(done));
                }
                drawn.set_position(done);
                drawn.set_message(extra);
            }
        });
        return Reporter {
            task,
            bar: Some(bar),
        };
    }
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(LOG_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (done, total, extra) = figures();
            info!("{}", line(what, unit, done, total, start.elapsed(), &extra));
        }
    });
    Reporter { task, bar: None }
}

/// One report as a log line: "backup: read 1.2 GiB of 3.0 GiB (40%), 52.1 MiB/s, stored
/// 0.4 GiB, about 35s left".
fn line(what: &str, unit: Unit, done: u64, total: u64, elapsed: Duration, extra: &str) -> String {
    let total = total.max(done);
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let left = if rate > 0.0 {
        format!("{:.0}s", (total - done) as f64 / rate)
    } else {
        "?".to_owned()
    };
    let percent = match total {
        0 => 0.0,
        _ => done as f64 * 100.0 / total as f64,
    };
    let amount = |n: u64| match unit {
        Unit::Bytes => human(n),
        Unit::Objects => n.to_string(),
    };
    let per_second = match unit {
        Unit::Bytes => format!("{}/s", human(rate as u64)),
        Unit::Objects => format!("{rate:.1} objects/s"),
    };
    format!(
        "{what} {} of {} ({percent:.0}%), {per_second}{extra}, about {left} left",
        amount(done),
        amount(total),
    )
}

/// Bytes in binary units, one decimal: "1.5 GiB".
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_gives_the_amount_the_share_the_rate_and_the_time_left() {
        let line = line(
            "backup: read",
            Unit::Bytes,
            1 << 30,
            4 << 30,
            Duration::from_secs(10),
            ", stored 512.0 MiB",
        );
        assert_eq!(
            line,
            "backup: read 1.0 GiB of 4.0 GiB (25%), 102.4 MiB/s, stored 512.0 MiB, about 30s left"
        );
        let line = super::line("backup-delete", Unit::Objects, 0, 8, Duration::ZERO, "");
        assert_eq!(
            line,
            "backup-delete 0 of 8 (0%), 0.0 objects/s, about ? left"
        );
    }

    #[test]
    fn a_total_below_what_is_done_is_taken_as_what_is_done() {
        let line = line("restore", Unit::Objects, 5, 3, Duration::from_secs(5), "");
        assert!(line.contains("5 of 5 (100%)"), "{line}");
        assert!(line.contains("about 0s left"), "{line}");
    }
}
