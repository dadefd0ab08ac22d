//! A small, strict JSON reader and string writer for the envelope.
//!
//! Why not serde_json: the client is also compiled to WebAssembly, where serde_json costs about
//! 25 KB gzipped, twice the whole client. The envelope needs much less than a general JSON
//! library: read one object's members, keep each value as a borrowed slice of the input (so a
//! payload is validated but never re-encoded, which also spares the server a DOM per frame), and
//! unescape the few strings the protocol itself reads. The grammar is RFC 8259's; property tests
//! in `core/tests/json_reader.rs` check it against serde_json.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Objects and arrays nested deeper than this are rejected, so a hostile frame cannot exhaust
/// the stack of whoever parses it next (including JavaScript's `JSON.parse`).
pub const MAX_DEPTH: usize = 64;

/// Why a text is not acceptable JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// What went wrong.
    pub kind: JsonErrorKind,
    /// Byte offset in the input where it went wrong.
    pub offset: usize,
}

/// The kinds of [`JsonError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonErrorKind {
    /// The input ended inside a value.
    UnexpectedEnd,
    /// A byte that cannot start or continue a value here.
    UnexpectedByte,
    /// A malformed number.
    InvalidNumber,
    /// A malformed escape or a raw control character inside a string.
    InvalidString,
    /// A `\u` escape that is not a valid Unicode scalar value, in a string that must become Rust
    /// text (member names and the envelope's own string fields).
    InvalidUnicode,
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Something other than whitespace after the value.
    TrailingCharacters,
}

impl JsonErrorKind {
    /// What went wrong, in words.
    pub fn as_str(self) -> &'static str {
        match self {
            JsonErrorKind::UnexpectedEnd => "unexpected end of input",
            JsonErrorKind::UnexpectedByte => "unexpected character",
            JsonErrorKind::InvalidNumber => "invalid number",
            JsonErrorKind::InvalidString => "invalid string",
            JsonErrorKind::InvalidUnicode => "invalid unicode escape",
            JsonErrorKind::TooDeep => "nested too deep",
            JsonErrorKind::TrailingCharacters => "trailing characters",
        }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.kind.as_str(), self.offset)
    }
}

impl core::error::Error for JsonError {}

/// One JSON value, as the exact slice of the input that spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawValue<'a> {
    text: &'a str,
}

impl<'a> RawValue<'a> {
    /// The value's text, exactly as it appeared in the input (already validated).
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The value as a string, unescaped; `None` if it is not a string or holds an escape that
    /// is not a Unicode scalar value.
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        if !self.text.starts_with('"') {
            return None;
        }
        let mut reader = Reader::new(self.text);
        reader.string(true).ok()
    }

    /// The value as a non-negative integer of at most 2^53 - 1 (exact in JavaScript).
    pub fn as_safe_integer(&self) -> Option<u64> {
        const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
        let digits = self.text.as_bytes();
        if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        if digits.len() > 1 && digits[0] == b'0' {
            return None;
        }
        let value = self.text.parse::<u64>().ok()?;
        (value <= MAX_SAFE_INTEGER).then_some(value)
    }

    /// Whether the value is the literal `true`.
    pub fn is_true(&self) -> bool {
        self.text == "true"
    }

    /// Whether the value is an object.
    pub fn is_object(&self) -> bool {
        self.text.starts_with('{')
    }
}

/// An object's members: unescaped names and raw values, in order.
pub type Members<'a> = Vec<(Cow<'a, str>, RawValue<'a>)>;

/// Checks that `text` is exactly one JSON value (surrounding whitespace allowed).
pub fn validate(text: &str) -> Result<RawValue<'_>, JsonError> {
    let mut reader = Reader::new(text);
    reader.whitespace();
    let value = reader.value(0)?;
    reader.end()?;
    Ok(value)
}

/// Reads `text` as exactly one JSON object and returns its members in order, each name unescaped
/// and each value as its raw slice. Every value is fully validated.
///
/// Returns `Ok(None)` when `text` is valid JSON but not an object.
pub fn object_members(text: &str) -> Result<Option<Members<'_>>, JsonError> {
    let mut reader = Reader::new(text);
    reader.whitespace();
    if reader.peek() != Some(b'{') {
        reader.value(0)?;
        reader.end()?;
        return Ok(None);
    }
    let members = reader.object(0, true)?;
    reader.end()?;
    Ok(members)
}

/// Reads the members of the object `text` in order, handing each name and value to `visit`,
/// until the member named `until`, whose value and everything after it are left unread (or to
/// the end of the object). Members read are validated; nothing is checked past where it
/// stopped. For a frame the server encoded itself, whose envelope fields come before the
/// payload, this finds `id` and `source` without reading the payload.
pub fn leading_members<'a>(
    text: &'a str,
    until: &str,
    mut visit: impl FnMut(&str, RawValue<'a>),
) -> Result<(), JsonError> {
    let mut reader = Reader::new(text);
    reader.whitespace();
    reader.expect(b'{')?;
    reader.whitespace();
    if reader.peek() == Some(b'}') {
        return Ok(());
    }
    loop {
        if reader.peek() != Some(b'"') {
            return Err(reader.unexpected());
        }
        let name = reader.string(true)?;
        if name == until {
            return Ok(());
        }
        reader.whitespace();
        reader.expect(b':')?;
        reader.whitespace();
        let value = reader.value(1)?;
        visit(&name, value);
        reader.whitespace();
        match reader.peek() {
            Some(b',') => {
                reader.pos += 1;
                reader.whitespace();
            }
            Some(b'}') => return Ok(()),
            _ => return Err(reader.unexpected()),
        }
    }
}

/// Appends `text` to `out` as a JSON string literal, quotes included.
// It cuts `text` next to ASCII bytes only; `get` instead of indexing keeps the slicing panic
// path out of the wasm build.
pub fn write_string(out: &mut String, text: &str) {
    out.push('"');
    let mut plain_from = 0;
    for (index, byte) in text.bytes().enumerate() {
        let escape: &str = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(text.get(plain_from..index).unwrap_or_default());
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xf)] as char);
        } else {
            out.push_str(escape);
        }
        plain_from = index + 1;
    }
    out.push_str(text.get(plain_from..).unwrap_or_default());
    out.push('"');
}

/// The position of the first byte at or after `from` that ends a run of plain string bytes
/// (a quote, a backslash or a control character), or the end. Eight bytes at a time (SWAR: a
/// byte of `word ^ pattern` is zero exactly where `word` has `pattern`'s byte; the lowest
/// flagged byte is exact, as a borrow only carries upwards), then the last few one by one.
fn skip_plain(bytes: &[u8], mut from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    while let Some(chunk) = bytes.get(from..from + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let special = zero_byte(word ^ (ONES * u64::from(b'"')))
            | zero_byte(word ^ (ONES * u64::from(b'\\')))
            // Bytes below 0x20 (a byte with its high bit set is never one of them).
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGH);
        if special != 0 {
            return from + (special.trailing_zeros() / 8) as usize;
        }
        from += 8;
    }
    let tail = bytes.get(from..).unwrap_or_default();
    from + tail
        .iter()
        .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
        .unwrap_or(tail.len())
}

/// A cursor over the input. Offsets in errors are byte offsets into it.
struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Reader { text, pos: 0 }
    }

    /// `text[from..to]`. The reader only cuts next to ASCII bytes, so this never comes back
    /// empty for a non-empty range; `get` rather than indexing keeps the panic path (its message
    /// formatting and Unicode tables, kilobytes) out of the wasm build.
    fn slice(&self, from: usize, to: usize) -> &'a str {
        self.text.get(from..to).unwrap_or_default()
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn error(&self, kind: JsonErrorKind) -> JsonError {
        JsonError {
            kind,
            offset: self.pos,
        }
    }

    fn unexpected(&self) -> JsonError {
        match self.peek() {
            None => self.error(JsonErrorKind::UnexpectedEnd),
            Some(_) => self.error(JsonErrorKind::UnexpectedByte),
        }
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn end(&mut self) -> Result<(), JsonError> {
        self.whitespace();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error(JsonErrorKind::TrailingCharacters)),
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), JsonError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    /// Reads one value starting exactly at the cursor (no leading whitespace).
    fn value(&mut self, depth: usize) -> Result<RawValue<'a>, JsonError> {
        let start = self.pos;
        match self.peek() {
            Some(b'{') => {
                self.object(depth, false)?;
            }
            Some(b'[') => self.array(depth)?,
            Some(b'"') => {
                self.string(false)?;
            }
            Some(b't') => self.literal("true")?,
            Some(b'f') => self.literal("false")?,
            Some(b'n') => self.literal("null")?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            _ => return Err(self.unexpected()),
        }
        Ok(RawValue {
            text: self.slice(start, self.pos),
        })
    }

    fn literal(&mut self, word: &str) -> Result<(), JsonError> {
        if self.slice(self.pos, self.text.len()).starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error(JsonErrorKind::UnexpectedByte))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), JsonError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error(JsonErrorKind::InvalidNumber)),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error(JsonErrorKind::InvalidNumber));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error(JsonErrorKind::InvalidNumber));
            }
        }
        Ok(())
    }

    fn array(&mut self, depth: usize) -> Result<(), JsonError> {
        if depth >= MAX_DEPTH {
            return Err(self.error(JsonErrorKind::TooDeep));
        }
        self.expect(b'[')?;
        self.whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.value(depth + 1)?;
            self.whitespace();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.whitespace();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    /// Reads an object. With `collect`, returns its members (names unescaped into Rust text);
    /// without, only validates it and returns `None`.
    fn object(&mut self, depth: usize, collect: bool) -> Result<Option<Members<'a>>, JsonError> {
        if depth >= MAX_DEPTH {
            return Err(self.error(JsonErrorKind::TooDeep));
        }
        self.expect(b'{')?;
        let mut members = Vec::new();
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(collect.then_some(members));
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.unexpected());
            }
            let name = self.string(collect)?;
            self.whitespace();
            self.expect(b':')?;
            self.whitespace();
            let value = self.value(depth + 1)?;
            if collect {
                members.push((name, value));
            }
            self.whitespace();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.whitespace();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(collect.then_some(members));
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    /// Reads a string literal. With `decode`, returns its unescaped text, which requires every
    /// `\u` escape to form a Unicode scalar value; without, only checks the escape syntax (lone
    /// surrogates are valid JSON and JavaScript produces them) and returns the raw contents.
    fn string(&mut self, decode: bool) -> Result<Cow<'a, str>, JsonError> {
        self.expect(b'"')?;
        let start = self.pos;
        let bytes = self.bytes();
        let mut decoded: Option<String> = None;
        let mut plain_from = start;
        loop {
            self.pos = skip_plain(bytes, self.pos);
            let Some(&byte) = bytes.get(self.pos) else {
                return Err(self.error(JsonErrorKind::UnexpectedEnd));
            };
            match byte {
                b'"' => {
                    let rest = self.slice(plain_from, self.pos);
                    self.pos += 1;
                    return Ok(match decoded {
                        Some(mut text) => {
                            text.push_str(rest);
                            Cow::Owned(text)
                        }
                        None => Cow::Borrowed(self.slice(start, self.pos - 1)),
                    });
                }
                b'\\' => {
                    let escape_at = self.pos;
                    let unescaped = self.escape(decode)?;
                    if decode {
                        let text = decoded.get_or_insert_with(String::new);
                        text.push_str(self.slice(plain_from, escape_at));
                        if let Some(c) = unescaped {
                            text.push(c);
                        }
                        plain_from = self.pos;
                    }
                }
                // skip_plain stops at nothing else: a control character.
                _ => return Err(self.error(JsonErrorKind::InvalidString)),
            }
        }
    }

    /// Reads one escape sequence at the cursor (which is on the backslash).
    fn escape(&mut self, decode: bool) -> Result<Option<char>, JsonError> {
        self.pos += 1;
        let Some(kind) = self.peek() else {
            return Err(self.error(JsonErrorKind::UnexpectedEnd));
        };
        self.pos += 1;
        let simple = match kind {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                if !decode {
                    return Ok(None);
                }
                return self.unicode_escape(first).map(Some);
            }
            _ => {
                self.pos -= 1;
                return Err(self.error(JsonErrorKind::InvalidString));
            }
        };
        Ok(Some(simple))
    }

    /// Completes a `\uXXXX` escape whose four digits were `first`, reading the low half of a
    /// surrogate pair when needed.
    fn unicode_escape(&mut self, first: u16) -> Result<char, JsonError> {
        let code = match first {
            0xd800..=0xdbff => {
                if !self.slice(self.pos, self.text.len()).starts_with("\\u") {
                    return Err(self.error(JsonErrorKind::InvalidUnicode));
                }
                self.pos += 2;
                let low = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&low) {
                    return Err(self.error(JsonErrorKind::InvalidUnicode));
                }
                0x10000 + ((u32::from(first) - 0xd800) << 10) + (u32::from(low) - 0xdc00)
            }
            0xdc00..=0xdfff => return Err(self.error(JsonErrorKind::InvalidUnicode)),
            _ => u32::from(first),
        };
        char::from_u32(code).ok_or_else(|| self.error(JsonErrorKind::InvalidUnicode))
    }

    fn hex4(&mut self) -> Result<u16, JsonError> {
        let mut value: u16 = 0;
        for _ in 0..4 {
            let digit = match self.peek() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                None => return Err(self.error(JsonErrorKind::UnexpectedEnd)),
                Some(_) => return Err(self.error(JsonErrorKind::InvalidString)),
            };
            value = value << 4 | u16::from(digit);
            self.pos += 1;
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_runs_end_at_every_special_byte_wherever_it_is() {
        for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
            for at in 0..24 {
                let mut text = vec![b'a'; 24];
                text[at] = special;
                for from in 0..=at {
                    assert_eq!(skip_plain(&text, from), at, "{special:#x} at {at}");
                }
                // A later special byte does not hide an earlier one.
                text[23] = b'"';
                assert_eq!(
                    skip_plain(&text, 0),
                    at,
                    "{special:#x} at {at}, then a quote"
                );
            }
        }
        // Bytes above the ASCII range (UTF-8) and 0x20..0x7f other than the two are plain.
        let plain = "é€ !#[]{}~abc😀xyzéé".as_bytes();
        assert_eq!(skip_plain(plain, 0), plain.len());
        assert_eq!(skip_plain(b"", 0), 0);
    }

    #[test]
    fn reads_members_with_raw_values() {
        let members = object_members(r#" {"type":"chat","payload":{"a":[1,2.5e3,null]},"id":7} "#)
            .expect("valid")
            .expect("object");
        assert_eq!(members.len(), 3);
        assert_eq!(members[0].0, "type");
        assert_eq!(members[0].1.as_str().as_deref(), Some("chat"));
        assert_eq!(members[1].1.text(), r#"{"a":[1,2.5e3,null]}"#);
        assert_eq!(members[2].1.as_safe_integer(), Some(7));
    }

    #[test]
    fn non_objects_are_valid_but_not_members() {
        assert_eq!(object_members("[1,2]"), Ok(None));
        assert_eq!(object_members(" \"x\" "), Ok(None));
    }

    #[test]
    fn unescapes_strings_and_surrogate_pairs() {
        let value = validate(r#""a\"b\\c\u00e9\ud83d\ude00\n""#).expect("valid");
        assert_eq!(value.as_str().as_deref(), Some("a\"b\\c\u{e9}\u{1f600}\n"));
    }

    #[test]
    fn lone_surrogates_are_valid_json_but_not_text() {
        let value = validate(r#""\ud800""#).expect("valid JSON");
        assert_eq!(value.as_str(), None);
        let err = object_members(r#"{"\udc00":1}"#).expect_err("name must be text");
        assert_eq!(err.kind, JsonErrorKind::InvalidUnicode);
    }

    #[test]
    fn rejects_malformed_input() {
        for (text, kind) in [
            ("", JsonErrorKind::UnexpectedEnd),
            ("{", JsonErrorKind::UnexpectedEnd),
            ("{\"a\" 1}", JsonErrorKind::UnexpectedByte),
            ("{\"a\":1,}", JsonErrorKind::UnexpectedByte),
            ("[1,]", JsonErrorKind::UnexpectedByte),
            ("01", JsonErrorKind::TrailingCharacters),
            ("1.", JsonErrorKind::InvalidNumber),
            ("-", JsonErrorKind::InvalidNumber),
            ("1e", JsonErrorKind::InvalidNumber),
            ("\"a\u{1}\"", JsonErrorKind::InvalidString),
            ("\"\\x\"", JsonErrorKind::InvalidString),
            ("tru", JsonErrorKind::UnexpectedByte),
            ("{} {}", JsonErrorKind::TrailingCharacters),
        ] {
            let err = validate(text).expect_err(text);
            assert_eq!(err.kind, kind, "{text:?}");
        }
    }

    #[test]
    fn limits_depth() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(validate(&ok).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(
            validate(&deep).map_err(|e| e.kind),
            Err(JsonErrorKind::TooDeep)
        );
        let deep_in_object = format!("{{\"p\":{deep}}}");
        assert!(object_members(&deep_in_object).is_err());
    }

    #[test]
    fn safe_integers_only() {
        let int = |text: &str| validate(text).expect("valid").as_safe_integer();
        assert_eq!(int("0"), Some(0));
        assert_eq!(int("9007199254740991"), Some((1 << 53) - 1));
        assert_eq!(int("9007199254740992"), None);
        assert_eq!(int("-1"), None);
        assert_eq!(int("1.0"), None);
        assert_eq!(int("1e3"), None);
    }

    #[test]
    fn writes_escaped_strings() {
        let mut out = String::new();
        write_string(&mut out, "a\"b\\c\n\u{1}é");
        assert_eq!(out, r#""a\"b\\c\n\u0001é""#);
        assert_eq!(
            validate(&out).expect("valid").as_str().as_deref(),
            Some("a\"b\\c\n\u{1}é")
        );
    }
}
