//! Python literals, as barman writes some `backup.info` values: `repr()` of a string, a
//! list of tuples or a dict, read back with `ast.literal_eval`.
//!
//! Only what those values hold is supported: `None`, booleans, integers, floats,
//! strings, lists, tuples and dicts. Floats keep their text, so what was read is written
//! back byte for byte.

use std::fmt::{self, Write};

/// A Python literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    Int(i64),
    /// A float, as written (`0.5`, `1e-05`).
    Float(String),
    Str(String),
    List(Vec<PyValue>),
    Tuple(Vec<PyValue>),
    /// Key and value pairs, in their written order (Python dicts keep insertion order).
    Dict(Vec<(PyValue, PyValue)>),
}

/// Why a text is not a Python literal barman would have written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Python literal at character {at}: {problem}")]
pub struct LiteralError {
    pub at: usize,
    pub problem: &'static str,
}

impl PyValue {
    /// The string inside, when this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` when this is a dict with a string key `key`.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(pairs) => pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Reads `text` as `ast.literal_eval` would (for the supported subset).
    pub fn parse(text: &str) -> Result<PyValue, LiteralError> {
        let mut parser = Parser {
            chars: text.char_indices().collect(),
            pos: 0,
        };
        let value = parser.value()?;
        parser.skip_space();
        if parser.pos < parser.chars.len() {
            return Err(parser.error("text after the value"));
        }
        Ok(value)
    }
}

/// `repr()` of the value, as Python 3 prints it.
impl fmt::Display for PyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PyValue::None => f.write_str("None"),
            PyValue::Bool(true) => f.write_str("True"),
            PyValue::Bool(false) => f.write_str("False"),
            PyValue::Int(i) => write!(f, "{i}"),
            PyValue::Float(text) => f.write_str(text),
            PyValue::Str(s) => write_str_repr(f, s),
            PyValue::List(items) => {
                f.write_char('[')?;
                write_items(f, items)?;
                f.write_char(']')
            }
            PyValue::Tuple(items) => {
                f.write_char('(')?;
                write_items(f, items)?;
                if items.len() == 1 {
                    f.write_char(',')?;
                }
                f.write_char(')')
            }
            PyValue::Dict(pairs) => {
                f.write_char('{')?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_char('}')
            }
        }
    }
}

fn write_items(f: &mut fmt::Formatter<'_>, items: &[PyValue]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

/// Python 3's `repr(str)`: single quotes unless the text holds a single quote and no
/// double one; backslash escapes for the quote, backslash, tab, newline, carriage
/// return and other control characters; printable characters as they are.
pub fn write_str_repr(out: &mut impl Write, s: &str) -> fmt::Result {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.write_char(quote)?;
    for c in s.chars() {
        match c {
            _ if c == quote || c == '\\' => {
                out.write_char('\\')?;
                out.write_char(c)?;
            }
            '\t' => out.write_str("\\t")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            _ if (c as u32) < 0x20 || c as u32 == 0x7f => write!(out, "\\x{:02x}", c as u32)?,
            _ if (c as u32) < 0x7f => out.write_char(c)?,
            // Python prints every printable character as it is; of the others, control
            // and separator characters are the ones a label could hold.
            _ if c.is_control() || (c.is_whitespace() && c != ' ') || c as u32 == 0xad => {
                match c as u32 {
                    n @ 0..=0xff => write!(out, "\\x{n:02x}")?,
                    n @ 0..=0xffff => write!(out, "\\u{n:04x}")?,
                    n => write!(out, "\\U{n:08x}")?,
                }
            }
            _ => out.write_char(c)?,
        }
    }
    out.write_char(quote)
}

struct Parser {
    chars: Vec<(usize, char)>,
    pos: usize,
}

impl Parser {
    fn error(&self, problem: &'static str) -> LiteralError {
        LiteralError {
            at: self.pos,
            problem,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|&(_, c)| c)
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Steps back over what [`Parser::next`] just read, so errors point at it.
    fn back(&mut self, read: Option<char>) {
        if read.is_some() {
            self.pos -= 1;
        }
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn value(&mut self) -> Result<PyValue, LiteralError> {
        self.skip_space();
        match self.peek() {
            Some('\'' | '"') => self.string().map(PyValue::Str),
            Some('[') => self.sequence(']').map(|(items, _)| PyValue::List(items)),
            Some('(') => {
                let (items, trailing_comma) = self.sequence(')')?;
                // `(x)` is x itself; `(x,)` is a one-element tuple.
                if items.len() == 1 && !trailing_comma {
                    Ok(items.into_iter().next().expect("one item"))
                } else {
                    Ok(PyValue::Tuple(items))
                }
            }
            Some('{') => self.dict(),
            Some(c) if c == '-' || c == '+' || c == '.' || c.is_ascii_digit() => self.number(),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
                    self.pos += 1;
                }
                let word: String = self.chars[start..self.pos]
                    .iter()
                    .map(|&(_, c)| c)
                    .collect();
                match word.as_str() {
                    "None" => Ok(PyValue::None),
                    "True" => Ok(PyValue::Bool(true)),
                    "False" => Ok(PyValue::Bool(false)),
                    _ => {
                        self.pos = start;
                        Err(self.error("a name other than None, True or False"))
                    }
                }
            }
            Some(_) => Err(self.error("an unexpected character")),
            None => Err(self.error("the end of the text where a value was expected")),
        }
    }

    /// Items up to `close`; also whether a comma followed the last one.
    fn sequence(&mut self, close: char) -> Result<(Vec<PyValue>, bool), LiteralError> {
        self.pos += 1;
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_space();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok((items, trailing_comma));
            }
            items.push(self.value()?);
            self.skip_space();
            match self.next() {
                Some(',') => trailing_comma = true,
                Some(c) if c == close => return Ok((items, false)),
                other => {
                    self.back(other);
                    return Err(self.error("a missing comma or closing bracket"));
                }
            }
        }
    }

    fn dict(&mut self) -> Result<PyValue, LiteralError> {
        self.pos += 1;
        let mut pairs = Vec::new();
        loop {
            self.skip_space();
            if self.peek() == Some('}') {
                self.pos += 1;
                return Ok(PyValue::Dict(pairs));
            }
            let key = self.value()?;
            self.skip_space();
            match self.next() {
                Some(':') => {}
                other => {
                    self.back(other);
                    return Err(self.error("a dict key without ':'"));
                }
            }
            let value = self.value()?;
            pairs.push((key, value));
            self.skip_space();
            match self.next() {
                Some(',') => {}
                Some('}') => return Ok(PyValue::Dict(pairs)),
                other => {
                    self.back(other);
                    return Err(self.error("a missing comma or closing brace"));
                }
            }
        }
    }

    fn number(&mut self) -> Result<PyValue, LiteralError> {
        let start = self.pos;
        if matches!(self.peek(), Some('-' | '+')) {
            self.pos += 1;
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '_'))
            || (matches!(self.peek(), Some('-' | '+'))
                && matches!(self.chars.get(self.pos - 1), Some((_, 'e' | 'E'))))
        {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos]
            .iter()
            .map(|&(_, c)| c)
            .collect();
        if let Ok(i) = text.replace('_', "").parse::<i64>() {
            return Ok(PyValue::Int(i));
        }
        if text.replace('_', "").parse::<f64>().is_ok() {
            return Ok(PyValue::Float(text));
        }
        self.pos = start;
        Err(self.error("a malformed number"))
    }

    fn string(&mut self) -> Result<String, LiteralError> {
        let quote = self.next().expect("a quote");
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err(self.error("a string without its closing quote")),
                Some(c) if c == quote => return Ok(out),
                Some('\\') => {
                    let escaped = self
                        .next()
                        .ok_or_else(|| self.error("a backslash at the end"))?;
                    match escaped {
                        '\\' | '\'' | '"' => out.push(escaped),
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'a' => out.push('\x07'),
                        'b' => out.push('\x08'),
                        'f' => out.push('\x0c'),
                        'v' => out.push('\x0b'),
                        '\n' => {}
                        'x' => out.push(self.hex_char(2)?),
                        'u' => out.push(self.hex_char(4)?),
                        'U' => out.push(self.hex_char(8)?),
                        '0'..='7' => {
                            let mut n = escaped.to_digit(8).expect("octal digit");
                            for _ in 0..2 {
                                match self.peek().and_then(|c| c.to_digit(8)) {
                                    Some(d) => {
                                        n = n * 8 + d;
                                        self.pos += 1;
                                    }
                                    None => break,
                                }
                            }
                            out.push(
                                char::from_u32(n)
                                    .ok_or_else(|| self.error("a bad octal escape"))?,
                            );
                        }
                        // Python keeps an unknown escape as it is.
                        other => {
                            out.push('\\');
                            out.push(other);
                        }
                    }
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn hex_char(&mut self, digits: usize) -> Result<char, LiteralError> {
        let mut n = 0u32;
        for _ in 0..digits {
            let d = self
                .next()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.error("a bad hexadecimal escape"))?;
            n = n * 16 + d;
        }
        char::from_u32(n).ok_or_else(|| self.error("an escape that is not a character"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each text is what Python 3.11's `repr()` prints for the value; reading it and
    /// printing it again gives the same bytes.
    #[test]
    fn what_python_prints_is_read_and_printed_back_byte_for_byte() {
        for text in [
            "None",
            "True",
            "-12",
            "0.5",
            "1e-05",
            "'plain'",
            "\"it's\"",
            r#"'both \' and "'"#,
            r"'back\\slash'",
            r"'START WAL LOCATION: 0/13000028 (file 000000010000000000000013)\nCHECKPOINT LOCATION: 0/13000060\n'",
            r"'tab\there\rand\x01\x7f'",
            "'caf\u{e9} \u{65e5}\u{672c}'",
            "[('tbs1', 16385, '/var/lib/tbs1'), ('tbs2', 16386, '/x')]",
            "('one',)",
            "()",
            "[]",
            "{}",
            "{'total_time': 12.5, 'number_of_workers': 2, 'analysis_time': 0, 'serialized_copy_time_per_item': {'data': 1.25}}",
            "['/etc/postgresql/15/main/conf.d/a.conf']",
        ] {
            let value = PyValue::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(value.to_string(), text);
        }
    }

    #[test]
    fn strings_read_to_their_characters() {
        let value = PyValue::parse(r"'a\nb\\c\'d\x41\u00e9\101'").unwrap();
        assert_eq!(value.as_str(), Some("a\nb\\c'dAéA"));
        let dict = PyValue::parse("{'k': 'v', 2: None}").unwrap();
        assert_eq!(dict.get("k"), Some(&PyValue::Str("v".into())));
        assert_eq!(PyValue::parse("(1)").unwrap(), PyValue::Int(1));
    }

    #[test]
    fn what_is_not_a_literal_is_refused_with_its_position() {
        for (text, at) in [
            ("'open", 5),
            ("[1 2]", 3),
            ("os.system('x')", 0),
            ("{'a' 1}", 5),
            ("1 2", 2),
            ("", 0),
        ] {
            let err = PyValue::parse(text).unwrap_err();
            assert_eq!(err.at, at, "{text}: {err}");
        }
    }
}
