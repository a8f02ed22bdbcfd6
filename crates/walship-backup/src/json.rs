//! `backup.info` as barman-cloud's `--format json` prints it (`BackupInfo.to_json`, then
//! Python's `json.dumps`), byte for byte: the CloudNativePG plugin parses this output,
//! so walship's `backup-list` and `backup-show` print exactly what barman's do.
//!
//! The shape: every key `backup.info` holds, in its sorted order, with the values as
//! the file has them (`backup_label` as its repr string, `children_backup_ids` joined
//! by commas), except `tablespaces` (arrays), `included_files` and `copy_stats` (the
//! values themselves) and the times (`ctime()` form); then `backup_id`, and the times
//! again in ISO form as `begin_time_iso` and `end_time_iso`.

use std::fmt::Write;

use crate::info::{BackupInfo, InfoTime};
use crate::pyrepr::PyValue;

/// A JSON value, printed as Python's `json.dumps` prints (`", "` and `": "` separators,
/// non-ASCII escaped).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// An integer or float, as its text.
    Number(String),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(n),
            Json::Str(s) => write_string(out, s),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(pairs) => {
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_string(out, k);
                    out.push_str(": ");
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// `json.dumps` of a string with `ensure_ascii`: the short escapes, `\u00XX` for other
/// control characters, `\uXXXX` (surrogate pairs beyond the BMP) for non-ASCII.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl From<&PyValue> for Json {
    fn from(value: &PyValue) -> Json {
        match value {
            PyValue::None => Json::Null,
            PyValue::Bool(b) => Json::Bool(*b),
            PyValue::Int(i) => Json::Number(i.to_string()),
            PyValue::Float(text) => Json::Number(text.clone()),
            PyValue::Str(s) => Json::Str(s.clone()),
            PyValue::List(items) | PyValue::Tuple(items) => {
                Json::Array(items.iter().map(Json::from).collect())
            }
            PyValue::Dict(pairs) => Json::Object(
                pairs
                    .iter()
                    .map(|(k, v)| {
                        let key = match k {
                            PyValue::Str(s) => s.clone(),
                            PyValue::None => "null".to_owned(),
                            PyValue::Bool(b) => if *b { "true" } else { "false" }.to_owned(),
                            other => other.to_string(),
                        };
                        (key, Json::from(v))
                    })
                    .collect(),
            ),
        }
    }
}

/// Python's `datetime.ctime()`: `Mon Nov 30 00:20:59 2026`, the day padded with a space,
/// in the time's own offset.
fn ctime(t: &InfoTime) -> String {
    t.0.format("%a %b %e %H:%M:%S %Y").to_string()
}

/// Python's `datetime.isoformat()`: `2026-11-30T00:19:33.672596+00:00`.
fn isoformat(t: &InfoTime) -> String {
    let text = t.to_string();
    text.replacen(' ', "T", 1)
}

/// One backup as barman's `BackupInfo.to_json()` has it, for `backup_id`.
pub fn backup_json(backup_id: &str, info: &BackupInfo) -> Json {
    let mut pairs: Vec<(String, Json)> = Vec::new();
    // backup.info's own lines, in their order: the file rendered by barman's rules, then
    // read back key by key, so both outputs stay one definition.
    for line in info.render().lines() {
        let Some((key, text)) = line.split_once('=') else {
            continue;
        };
        let value = match key {
            "tablespaces" if !info.tablespaces.is_empty() => Json::Array(
                info.tablespaces
                    .iter()
                    .map(|t| {
                        Json::Array(vec![
                            Json::Str(t.name.clone()),
                            Json::Number(t.oid.to_string()),
                            Json::Str(t.location.clone()),
                        ])
                    })
                    .collect(),
            ),
            "included_files" => info.included_files.as_ref().map_or(Json::Null, Json::from),
            "copy_stats" => info.copy_stats.as_ref().map_or(Json::Null, Json::from),
            "begin_time" => info
                .begin_time
                .as_ref()
                .map_or(Json::Null, |t| Json::Str(ctime(t))),
            "end_time" => info
                .end_time
                .as_ref()
                .map_or(Json::Null, |t| Json::Str(ctime(t))),
            _ if text == "None" => Json::Null,
            // Fields barman loads as numbers are numbers in its JSON.
            "begin_offset" | "end_offset" | "size" | "deduplicated_size" | "cluster_size"
            | "timeline" | "version" | "xlog_segment_size" => Json::Number(text.to_owned()),
            _ => Json::Str(text.to_owned()),
        };
        pairs.push((key.to_owned(), value));
    }
    pairs.push(("backup_id".to_owned(), Json::Str(backup_id.to_owned())));
    if let Some(t) = &info.begin_time {
        pairs.push(("begin_time_iso".to_owned(), Json::Str(isoformat(t))));
    }
    if let Some(t) = &info.end_time {
        pairs.push(("end_time_iso".to_owned(), Json::Str(isoformat(t))));
    }
    Json::Object(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_python_json_dumps_escapes_them() {
        let text = Json::Str("a\"b\\c\nd\te\u{1}é日\u{1F600}".into()).render();
        assert_eq!(text, r#""a\"b\\c\nd\te\u0001\u00e9\u65e5\ud83d\ude00""#);
    }

    #[test]
    fn times_come_out_in_ctime_and_iso_form() {
        let t = InfoTime::parse("2026-11-03 00:20:59.5+01:00").unwrap();
        assert_eq!(ctime(&t), "Tue Nov  3 00:20:59 2026");
        assert_eq!(isoformat(&t), "2026-11-03T00:20:59.500000+01:00");
    }
}
