//! Timeline history files (`00000002.history`): which timeline holds which WAL.
//!
//! PostgreSQL writes one per new timeline: a line per ancestor, `parentTLI  switchpoint
//! reason`, where the switch point is the LSN at which that ancestor ended. Recovery
//! reads a segment from the newest timeline that had begun by the segment's end, so
//! the segment holding a switch point comes from the new timeline.

use crate::error::WalError;
use crate::name::WalName;

/// A parsed timeline history: the timelines from the first to `newest`, each with the
/// LSN where it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistory {
    newest: u32,
    /// `(timeline, switch point)`, oldest first, with strictly increasing both.
    ended: Vec<(u32, u64)>,
}

impl TimelineHistory {
    /// Parses the content of the history file of timeline `newest`. `None` when the
    /// text is not a history file: callers then simply do not predict timelines.
    pub fn parse(newest: u32, text: &str) -> Option<TimelineHistory> {
        let mut ended = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let tli: u32 = fields.next()?.parse().ok()?;
            let (hi, lo) = fields.next()?.split_once('/')?;
            let lsn =
                (u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?;
            if let Some(&(prev_tli, prev_lsn)) = ended.last()
                && (tli <= prev_tli || lsn < prev_lsn)
            {
                return None;
            }
            ended.push((tli, lsn));
        }
        if ended.last().is_some_and(|&(tli, _)| tli >= newest) {
            return None;
        }
        Some(TimelineHistory { newest, ended })
    }

    /// Checks that `content` is the history file `name` names, as PostgreSQL writes it:
    /// UTF-8 text with at least one ancestor line, timelines and switch points
    /// increasing, every ancestor older than the file's own timeline.
    pub fn validate(name: &WalName, content: &[u8]) -> Result<TimelineHistory, WalError> {
        let bad = |reason| WalError::BadHistory {
            name: name.to_string(),
            timeline: name.timeline(),
            reason,
        };
        if !name.is_history() {
            return Err(bad("not a .history file name"));
        }
        let text = std::str::from_utf8(content).map_err(|_| bad("not UTF-8 text"))?;
        let history = TimelineHistory::parse(name.timeline(), text)
            .ok_or_else(|| bad("a line does not parse or is out of order"))?;
        if history.ended.is_empty() {
            return Err(bad("no ancestor timeline line"));
        }
        Ok(history)
    }

    /// The newest timeline, whose history this is.
    pub fn newest(&self) -> u32 {
        self.newest
    }

    /// Whether `tli` is the newest timeline or one of its ancestors.
    pub fn contains(&self, tli: u32) -> bool {
        tli == self.newest || self.ended.iter().any(|&(t, _)| t == tli)
    }

    /// The timeline recovery reads segment number `segno` from: the newest one that
    /// began at or before the segment's end.
    pub fn timeline_of_segment(&self, segno: u64, wal_segment_size: u64) -> u32 {
        // Timeline i begins where timeline i-1 ended; walk from the newest back.
        let mut timeline = self.newest;
        for &(tli, switch) in self.ended.iter().rev() {
            if segno >= switch / wal_segment_size {
                return timeline;
            }
            timeline = tli;
        }
        timeline
    }

    /// The `count` segments after `current` that recovery will ask for, each on the
    /// timeline it will be read from.
    pub fn following_segments(
        &self,
        current: &WalName,
        count: usize,
        wal_segment_size: u64,
    ) -> Vec<WalName> {
        let Some(segno) = current.segment_number(wal_segment_size) else {
            return Vec::new();
        };
        (1..=count as u64)
            .map_while(|i| {
                let n = segno.checked_add(i)?;
                WalName::from_segment_number(
                    self.timeline_of_segment(n, wal_segment_size),
                    n,
                    wal_segment_size,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB16: u64 = 16 << 20;

    /// Timeline 3: 1 ended at 0/3000158 (in segment 3), 2 ended at 0/5000000 (the first
    /// byte of segment 5).
    fn history() -> TimelineHistory {
        TimelineHistory::parse(
            3,
            "1\t0/3000158\tno recovery target specified\n\n# comment\n2\t0/5000000\tat restore point \"x\"\n",
        )
        .unwrap()
    }

    #[test]
    fn segments_come_from_the_newest_timeline_begun_by_their_end() {
        let h = history();
        let tli: Vec<u32> = (0..8).map(|n| h.timeline_of_segment(n, MIB16)).collect();
        // Segment 3 holds the switch point of timeline 1: it is read from timeline 2.
        assert_eq!(tli, [1, 1, 1, 2, 2, 3, 3, 3]);
        assert!(h.contains(1) && h.contains(2) && h.contains(3) && !h.contains(4));
    }

    #[test]
    fn following_segments_cross_the_switch_points() {
        let h = history();
        let current = WalName::parse("000000010000000000000002").unwrap();
        let names: Vec<String> = h
            .following_segments(&current, 4, MIB16)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            [
                "000000020000000000000003",
                "000000020000000000000004",
                "000000030000000000000005",
                "000000030000000000000006",
            ]
        );
    }

    #[test]
    fn what_is_not_a_history_is_refused() {
        for (tli, text) in [
            (2, "garbage"),
            (2, "1\tnot-an-lsn\treason"),
            (2, "2\t0/3000000\ta timeline cannot be its own ancestor"),
            (3, "2\t0/5000000\tx\n1\t0/3000000\tout of order"),
        ] {
            assert_eq!(TimelineHistory::parse(tli, text), None, "{text:?}");
        }
        // Timeline 1 has no history file, but an empty history is well formed.
        assert_eq!(history().newest(), 3);
        assert!(TimelineHistory::parse(2, "").is_some());
    }

    #[test]
    fn only_what_postgresql_writes_passes_as_a_history_file() {
        let name = WalName::parse("00000003.history").unwrap();
        let good =
            b"1\t0/3000000\tno recovery target specified\n\n2\t0/5000000\tbefore 2026-11-30\n";
        assert_eq!(TimelineHistory::validate(&name, good).unwrap().newest(), 3);
        for (content, reason) in [
            (&b"\x00\xff\xfe garbage"[..], "not UTF-8"),
            (b"", "no ancestor"),
            (b"garbage\n", "does not parse"),
            (b"1\t0/3000000\tx\n3\t0/4000000\ty\n", "does not parse"),
            (b"2\t0/3000000\tx\n1\t0/4000000\ty\n", "does not parse"),
        ] {
            let err = TimelineHistory::validate(&name, content)
                .unwrap_err()
                .to_string();
            assert!(err.contains(reason), "{content:?}: {err}");
            assert!(
                err.starts_with("00000003.history: not a timeline history"),
                "{err}"
            );
        }
    }
}
