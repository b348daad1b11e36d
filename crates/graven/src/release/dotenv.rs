//! Dotenv files: the `KEY=VALUE` text that `graven config import FILE` reads,
//! in the syntax Docker Compose and python-dotenv share where it is sane.
//!
//! This module owns the syntax only. It does no I/O, and it never expands
//! variables: `$OTHER` and `${OTHER}` are kept as written, because a config
//! version must hold exactly the bytes the file says, not values that depend
//! on the importing shell.
//!
//! The syntax, line by line (a blank is a space or a tab):
//!
//! - A line that is empty, all blanks, or whose first non-blank character is
//!   `#` is ignored. Lines end with LF or CRLF; a leading byte-order mark is
//!   ignored.
//! - Every other line is `KEY=VALUE`, optionally after `export` and one or
//!   more blanks. Blanks may surround `KEY` and `=`. `KEY` matches
//!   `[A-Za-z_][A-Za-z0-9_]*`. A line with no `=` is an error.
//! - An unquoted value is the rest of the line up to the first `#` that
//!   follows a blank (an inline comment), with blanks trimmed from both ends.
//!   It has no escapes: `\n` is a backslash and an `n`. `KEY=` and `KEY= #`
//!   give the empty string; `KEY=a#b` gives `a#b`.
//! - A value whose first non-blank character is `'` is single-quoted: every
//!   character up to the next `'` is literal, line breaks included.
//! - A value whose first non-blank character is `"` is double-quoted: it ends
//!   at the next unescaped `"`, may span lines, and knows the escapes `\n`,
//!   `\r`, `\t`, `\\`, `\"`, `\$` and `\'`; any other `\` is an error. An
//!   unescaped `$` stays a literal `$`.
//! - After the closing quote of either kind, only blanks and an optional
//!   `# comment` may follow on that line. Inside quotes, a CRLF line break is
//!   read as LF, since it belongs to the file rather than to the value.
//! - No value may contain NUL.
//! - A key given twice keeps its last value, listed where the key first
//!   appeared: [`parse`] returns each key once, in order of first appearance.
//!
//! Errors name the 1-based line and column (in characters) of the offending
//! character. Their messages name keys but never quote a value, because values
//! are secrets and error messages end up in terminals and CI logs.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::app::Position;

/// A dotenv file that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("line {}, column {}: {message}", position.line, position.column)]
pub struct DotenvError {
    /// Where the problem is.
    pub position: Position,
    /// What was expected, and what was found.
    pub message: String,
}

/// The characters the syntax treats as blanks.
const BLANKS: [char; 2] = [' ', '\t'];

/// The escapes a double-quoted value knows, as the help of an error message.
const KNOWN_ESCAPES: &str = r#"\n, \r, \t, \\, \", \$ or \'"#;

/// Parses a dotenv file's text into `(key, value)` pairs: each key once, in
/// order of first appearance, with the last value given for it.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, DotenvError> {
    let bom = text.starts_with('\u{feff}');
    let mut parser = Parser { text, offset: if bom { '\u{feff}'.len_utf8() } else { 0 }, bom };
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut index_of_key: HashMap<String, usize> = HashMap::new();
    while let Some((key, value)) = parser.next_entry()? {
        match index_of_key.entry(key) {
            Entry::Occupied(entry) => pairs[*entry.get()].1 = value,
            Entry::Vacant(entry) => {
                pairs.push((entry.key().clone(), value));
                entry.insert(pairs.len() - 1);
            }
        }
    }
    Ok(pairs)
}

/// A cursor over the text; `offset` is always the start of a line.
struct Parser<'a> {
    text: &'a str,
    offset: usize,
    /// Whether the text starts with a byte-order mark, which editors do not
    /// show and columns therefore do not count.
    bom: bool,
}

impl<'a> Parser<'a> {
    /// The next `KEY=VALUE` entry, skipping blank and comment lines.
    fn next_entry(&mut self) -> Result<Option<(String, String)>, DotenvError> {
        while self.offset < self.text.len() {
            let line_start = self.offset;
            let line = self.take_line();
            let content = line.trim_start_matches(BLANKS);
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let mut entry = content;
            if let Some(after) = content.strip_prefix("export")
                && after.starts_with(BLANKS)
                && after.trim_start_matches(BLANKS).starts_with(|c| c != '=')
            {
                entry = after.trim_start_matches(BLANKS);
            }
            let key_start = line_start + line.len() - entry.len();
            let Some(equals) = entry.find('=') else {
                return Err(self.error(key_start, "expected KEY=VALUE, found no '='".to_owned()));
            };
            let key = entry[..equals].trim_end_matches(BLANKS);
            self.check_key(key, key_start, key_start + equals)?;
            let after_equals = &entry[equals + 1..];
            let value = after_equals.trim_start_matches(BLANKS);
            let value_start = key_start + equals + 1 + after_equals.len() - value.len();
            let value = match value.chars().next() {
                Some('\'') => self.single_quoted(key, value_start)?,
                Some('"') => self.double_quoted(key, value_start)?,
                _ => self.unquoted(after_equals, key_start + equals + 1)?,
            };
            return Ok(Some((key.to_owned(), value)));
        }
        Ok(None)
    }

    /// The line at `offset`, without its line break; moves to the next line.
    fn take_line(&mut self) -> &'a str {
        let rest = &self.text[self.offset..];
        let (line, length) = rest.find('\n').map_or((rest, rest.len()), |end| (&rest[..end], end + 1));
        self.offset += length;
        line.strip_suffix('\r').unwrap_or(line)
    }

    /// Checks that `key`, found at `start`, is a valid key.
    fn check_key(&self, key: &str, start: usize, equals: usize) -> Result<(), DotenvError> {
        if key.is_empty() {
            return Err(self.error(equals, "expected a key before '='".to_owned()));
        }
        if let Some((index, bad)) = key.char_indices().find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_')) {
            return Err(self.error(
                start + index,
                format!(
                    "key '{}' has '{}': keys use only A-Z, a-z, 0-9 and '_'",
                    printable(key.chars()),
                    printable([bad])
                ),
            ));
        }
        if key.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(self.error(start, format!("key '{key}' starts with a digit: keys start with A-Z, a-z or '_'")));
        }
        Ok(())
    }

    /// An unquoted value: `raw` is the rest of the line after `=`, at `start`.
    fn unquoted(&self, raw: &str, start: usize) -> Result<String, DotenvError> {
        let comment = raw.char_indices().find(|&(index, c)| c == '#' && raw[..index].ends_with(BLANKS));
        let value = comment.map_or(raw, |(index, _)| &raw[..index]);
        let trimmed = value.trim_start_matches(BLANKS);
        if let Some(nul) = trimmed.find('\0') {
            return Err(self.error(start + value.len() - trimmed.len() + nul, "values cannot contain NUL".to_owned()));
        }
        Ok(trimmed.trim_end_matches(BLANKS).to_owned())
    }

    /// A single-quoted value whose opening quote is at `open`.
    fn single_quoted(&mut self, key: &str, open: usize) -> Result<String, DotenvError> {
        let body_start = open + 1;
        let Some(length) = self.text[body_start..].find('\'') else {
            return Err(self.error(open, format!("unterminated single-quoted value for {key}")));
        };
        let body = &self.text[body_start..body_start + length];
        if let Some(nul) = body.find('\0') {
            return Err(self.error(body_start + nul, "values cannot contain NUL".to_owned()));
        }
        self.finish_quoted(key, body_start + length + 1)?;
        Ok(body.replace("\r\n", "\n"))
    }

    /// A double-quoted value whose opening quote is at `open`.
    fn double_quoted(&mut self, key: &str, open: usize) -> Result<String, DotenvError> {
        let body_start = open + 1;
        let body = &self.text[body_start..];
        let mut value = String::new();
        let mut chars = body.char_indices().peekable();
        let unterminated = || self.error(open, format!("unterminated double-quoted value for {key}"));
        let close = loop {
            let Some((index, c)) = chars.next() else { return Err(unterminated()) };
            match c {
                '"' => break body_start + index,
                '\0' => return Err(self.error(body_start + index, "values cannot contain NUL".to_owned())),
                '\r' if chars.peek().is_some_and(|&(_, next)| next == '\n') => {}
                '\\' => {
                    let Some((_, escaped)) = chars.next() else { return Err(unterminated()) };
                    let at = body_start + index;
                    value.push(match escaped {
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        '\\' | '"' | '$' | '\'' => escaped,
                        '\0' => return Err(self.error(at + 1, "values cannot contain NUL".to_owned())),
                        '\n' | '\r' => {
                            let message = format!("'\\' before a line break in the value of {key}");
                            return Err(self.error(at, format!("{message}: quoted values span lines without it")));
                        }
                        other => {
                            return Err(self.error(
                                at,
                                format!(
                                    "unknown escape '\\{}' in the value of {key}: use {KNOWN_ESCAPES}",
                                    printable([other])
                                ),
                            ));
                        }
                    });
                }
                _ => value.push(c),
            }
        };
        self.finish_quoted(key, close + 1)?;
        Ok(value)
    }

    /// Checks that only blanks and a comment follow a closing quote, which is
    /// just before `after_quote`, and moves to the next line.
    fn finish_quoted(&mut self, key: &str, after_quote: usize) -> Result<(), DotenvError> {
        self.offset = after_quote;
        let rest = self.take_line();
        let trailing = rest.trim_start_matches(BLANKS);
        if let Some(bad) = trailing.chars().next().filter(|&c| c != '#') {
            return Err(self.error(
                after_quote + rest.len() - trailing.len(),
                format!(
                    "unexpected '{}' after the closing quote of {key}: only a '# comment' may follow",
                    printable([bad])
                ),
            ));
        }
        Ok(())
    }

    /// An error at byte `offset` of the text.
    fn error(&self, offset: usize, message: String) -> DotenvError {
        let mut position = Position::of_offset(self.text, offset);
        if self.bom && position.line == 1 {
            position.column -= 1;
        }
        DotenvError { position, message }
    }
}

/// `chars` with control characters escaped, to quote them in a message.
fn printable(chars: impl IntoIterator<Item = char>) -> String {
    chars.into_iter().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
    }

    fn owned(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected.iter().map(|&(key, value)| (key.to_owned(), value.to_owned())).collect()
    }

    fn error(text: &str) -> String {
        parse(text).expect_err(text).to_string()
    }

    #[test]
    fn blank_lines_comments_and_export_prefixes() {
        let text = "# database\n\n   \t\n  # indented comment\n\
                    export   A=1\nexport\tB=2\n  C = 3  \nexport=4\nexported=5\nexport =6\n";
        assert_eq!(pairs(text), owned(&[("A", "1"), ("B", "2"), ("C", "3"), ("export", "6"), ("exported", "5")]));
        assert_eq!(pairs(""), owned(&[]));
        assert_eq!(pairs("A=1"), owned(&[("A", "1")]), "no final line break");
        assert_eq!(pairs("\u{feff}A=1\n"), owned(&[("A", "1")]), "byte-order mark");
        assert_eq!(pairs("_=1\na_B9=2\n"), owned(&[("_", "1"), ("a_B9", "2")]));
    }

    #[test]
    fn unquoted_values_are_trimmed_literal_and_end_at_inline_comments() {
        let text = "A=\nB= #\nC=  x y  # comment\nD=a#b\nE=a\t#b\nF=#x\nG=$HOME/${X}\\n\nH=it's \"so\"\nI=a=b\n";
        assert_eq!(
            pairs(text),
            owned(&[
                ("A", ""),
                ("B", ""),
                ("C", "x y"),
                ("D", "a#b"),
                ("E", "a"),
                ("F", "#x"),
                ("G", "$HOME/${X}\\n"),
                ("H", "it's \"so\""),
                ("I", "a=b"),
            ])
        );
    }

    #[test]
    fn single_quoted_values_are_literal_and_may_span_lines() {
        let text = "A='  $X \\n \" # x '\nB = ''  # empty\nC='line 1\n\nline 3'\nD=after\n";
        assert_eq!(
            pairs(text),
            owned(&[("A", "  $X \\n \" # x "), ("B", ""), ("C", "line 1\n\nline 3"), ("D", "after")])
        );
    }

    #[test]
    fn double_quoted_values_have_escapes_and_may_span_lines() {
        let text = r##"A="a\nb\rc\td\\e\"f\$g\'h"
B="$HOME ${X} 'q' # not a comment"   # comment
C="-----BEGIN KEY-----
abc=
-----END KEY-----"#comment
D=""
"##;
        assert_eq!(
            pairs(text),
            owned(&[
                ("A", "a\nb\rc\td\\e\"f$g'h"),
                ("B", "$HOME ${X} 'q' # not a comment"),
                ("C", "-----BEGIN KEY-----\nabc=\n-----END KEY-----"),
                ("D", ""),
            ])
        );
    }

    #[test]
    fn crlf_line_endings() {
        let text = "# c\r\n\r\nexport A=1 \r\nB='x\r\ny'\r\nC=\"p\r\nq\\r\"\r\nD=\r\n";
        assert_eq!(pairs(text), owned(&[("A", "1"), ("B", "x\ny"), ("C", "p\nq\r"), ("D", "")]));
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_last_value() {
        assert_eq!(pairs("A=1\nB=2\nA=3\nC=4\nB='5'\n"), owned(&[("A", "3"), ("B", "5"), ("C", "4")]));
    }

    #[test]
    fn errors_name_line_column_and_expectation() {
        let cases = [
            ("A=1\nB\n", "line 2, column 1: expected KEY=VALUE, found no '='"),
            ("  export  SECRET\n", "line 1, column 11: expected KEY=VALUE, found no '='"),
            ("export\n", "line 1, column 1: expected KEY=VALUE, found no '='"),
            (" = 1\n", "line 1, column 2: expected a key before '='"),
            ("  MY-KEY=1\n", "line 1, column 5: key 'MY-KEY' has '-': keys use only A-Z, a-z, 0-9 and '_'"),
            ("MY KEY=1\n", "line 1, column 3: key 'MY KEY' has ' ': keys use only A-Z, a-z, 0-9 and '_'"),
            ("clé=1\n", "line 1, column 3: key 'clé' has 'é': keys use only A-Z, a-z, 0-9 and '_'"),
            ("\u{feff}a.b=1\n", "line 1, column 2: key 'a.b' has '.': keys use only A-Z, a-z, 0-9 and '_'"),
            ("A\tB=1\n", r"line 1, column 2: key 'A\tB' has '\t': keys use only A-Z, a-z, 0-9 and '_'"),
            ("1A=1\n", "line 1, column 1: key '1A' starts with a digit: keys start with A-Z, a-z or '_'"),
            ("A=1\nB = 'x\ny\n", "line 2, column 5: unterminated single-quoted value for B"),
            ("A=\"x\\\"\n", "line 1, column 3: unterminated double-quoted value for A"),
            ("A=\"x\\", "line 1, column 3: unterminated double-quoted value for A"),
            (
                "A=\"\nx\\qy\"\n",
                r#"line 2, column 2: unknown escape '\q' in the value of A: use \n, \r, \t, \\, \", \$ or \'"#,
            ),
            (
                "A=\"é\\0\"\n",
                r#"line 1, column 5: unknown escape '\0' in the value of A: use \n, \r, \t, \\, \", \$ or \'"#,
            ),
            (
                "A=\"x\\\ny\"\n",
                r"line 1, column 5: '\' before a line break in the value of A: quoted values span lines without it",
            ),
            (
                "A=\"x\"y\n",
                "line 1, column 6: unexpected 'y' after the closing quote of A: only a '# comment' may follow",
            ),
            (
                "A='x\ny'  z # c\n",
                "line 2, column 5: unexpected 'z' after the closing quote of A: only a '# comment' may follow",
            ),
            (
                "A=\"x\" \"y\"\r\n",
                "line 1, column 7: unexpected '\"' after the closing quote of A: only a '# comment' may follow",
            ),
            ("A=a\0b\n", "line 1, column 4: values cannot contain NUL"),
            ("A=  \0\n", "line 1, column 5: values cannot contain NUL"),
            ("A='\n\0'\n", "line 2, column 1: values cannot contain NUL"),
            ("A=\"ab\0\"\n", "line 1, column 6: values cannot contain NUL"),
            ("A=\"\\\0\"\n", "line 1, column 5: values cannot contain NUL"),
        ];
        for (text, expected) in cases {
            assert_eq!(error(text), expected, "{text:?}");
        }
    }

    #[test]
    fn nul_in_a_comment_is_not_a_value() {
        assert_eq!(pairs("# \0\nA=1 # \0\nB=\"2\" # \0\n"), owned(&[("A", "1"), ("B", "2")]));
    }

    #[test]
    fn error_messages_never_quote_values() {
        for text in ["A=\"secret\\q\"", "A='secret", "A=\"secret\"secret", "secret\n"] {
            assert!(!error(text).contains("secret"), "{text:?}: {}", error(text));
        }
    }
}
