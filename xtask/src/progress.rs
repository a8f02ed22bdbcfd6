//! Saying what a long command is doing: each step announced as it starts, numbered,
//! with the time since the command began, so a newcomer watching a first run knows
//! it is alive and how far it got.

use std::io::{self, Write};
use std::time::{Duration, Instant};

/// The steps of one command (`demo`, `bench`), printed to stderr as they start.
pub struct Steps<W: Write = io::Stderr> {
    task: &'static str,
    total: usize,
    started: usize,
    start: Instant,
    out: W,
}

impl Steps {
    /// `total` steps of `task`, printed to stderr (beside cargo's own progress).
    pub fn new(task: &'static str, total: usize) -> Steps {
        Steps::to(io::stderr(), task, total)
    }
}

impl<W: Write> Steps<W> {
    /// Like [`Steps::new`], printing to `out`.
    pub fn to(out: W, task: &'static str, total: usize) -> Steps<W> {
        Steps {
            task,
            total,
            started: 0,
            start: Instant::now(),
            out,
        }
    }

    /// Announces the next step.
    pub fn step(&mut self, what: &str) {
        self.started += 1;
        let line = step_line(
            self.task,
            self.started,
            self.total,
            self.start.elapsed(),
            what,
        );
        // Progress is a courtesy: a closed stderr must not fail the command.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    /// A line after the last step: how long the whole command took.
    pub fn finish(&mut self, what: &str) {
        let line = format!(
            "{} [done] {} {what}",
            self.task,
            clock(self.start.elapsed())
        );
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    /// The output, for tests.
    #[cfg(test)]
    fn into_inner(self) -> W {
        self.out
    }
}

/// `demo [3/9] 0:42 starting PostgreSQL`: the task, the step's number out of the
/// total, the time since the task began, what the step does.
pub fn step_line(task: &str, n: usize, total: usize, elapsed: Duration, what: &str) -> String {
    format!("{task} [{n}/{total}] {} {what}", clock(elapsed))
}

/// Elapsed time as a clock reads it: `0:07`, `12:34`, `1:02:03`.
pub fn clock(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_minutes_and_seconds_then_hours() {
        for (secs, want) in [
            (0, "0:00"),
            (7, "0:07"),
            (59, "0:59"),
            (60, "1:00"),
            (754, "12:34"),
            (3599, "59:59"),
            (3600, "1:00:00"),
            (3723, "1:02:03"),
        ] {
            assert_eq!(clock(Duration::from_secs(secs)), want, "{secs}s");
        }
    }

    #[test]
    fn clock_drops_fractions_of_a_second() {
        assert_eq!(clock(Duration::from_millis(61_999)), "1:01");
    }

    #[test]
    fn a_step_line_names_the_task_the_step_number_the_time_and_the_step() {
        assert_eq!(
            step_line("demo", 3, 9, Duration::from_secs(42), "starting PostgreSQL"),
            "demo [3/9] 0:42 starting PostgreSQL"
        );
    }

    #[test]
    fn steps_are_numbered_in_order_and_printed_as_they_start() {
        let mut steps = Steps::to(Vec::new(), "demo", 2);
        steps.step("building walship");
        steps.step("initdb");
        steps.finish("kept in target/demo");
        let text = String::from_utf8(steps.into_inner()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        // The test runs in well under a minute, so the clock reads 0:0x.
        assert!(lines[0].starts_with("demo [1/2] 0:0"), "{text}");
        assert!(lines[0].ends_with(" building walship"), "{text}");
        assert!(lines[1].starts_with("demo [2/2] 0:0"), "{text}");
        assert!(lines[1].ends_with(" initdb"), "{text}");
        assert!(lines[2].starts_with("demo [done] 0:0"), "{text}");
        assert!(lines[2].ends_with(" kept in target/demo"), "{text}");
    }
}
