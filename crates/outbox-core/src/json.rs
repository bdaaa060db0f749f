//! JSON text inside JSON strings: escaping it, and checking a payload while
//! it is still escaped.
//!
//! The relay's hot path reads a payload out of one JSON string (the stream's
//! `S` attribute) and writes it into another (the `PutEvents` `Detail`).
//! Both strings escape the payload the same way, so the relay never needs
//! the payload's own text: it checks the escaped text once
//! ([`Payload::from_json_string`](crate::Payload::from_json_string),
//! [`Payload::from_json_string_prefix`](crate::Payload::from_json_string_prefix))
//! and copies it. [`escape_into`] writes everything else of the `Detail`.

/// What a byte becomes inside a JSON string: 0 for itself, `u` for a
/// `\u00XX` escape, or the letter of its two-character escape. serde_json
/// escapes the same bytes the same way.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Appends `bytes` (UTF-8 text) escaped as the inside of a JSON string, as
/// serde_json escapes a string (`"`, `\` and control characters; nothing
/// else). Only ASCII bytes are escaped, so text may come in any pieces, even
/// cut inside a character.
pub fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    each_escape(bytes, |plain, escaped| {
        out.extend_from_slice(plain);
        match escaped {
            Some((b, b'u')) => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
            Some((_, escape)) => out.extend_from_slice(&[b'\\', escape]),
            None => {}
        }
    });
}

/// The length of what [`escape_into`] appends for `bytes`.
pub(crate) fn escaped_len(bytes: &[u8]) -> usize {
    let mut len = 0;
    each_escape(bytes, |plain, escaped| {
        len += plain.len()
            + match escaped {
                Some((_, b'u')) => 6,
                Some(_) => 2,
                None => 0,
            };
    });
    len
}

/// Walks `bytes` as [`escape_into`] escapes them: `step` gets each run of
/// bytes that stand for themselves (found eight at a time) with the byte
/// to escape after it and its [`ESCAPE`] entry (`None` after the last run).
#[inline(always)]
fn each_escape(mut bytes: &[u8], mut step: impl FnMut(&[u8], Option<(u8, u8)>)) {
    loop {
        let (run, rest) = bytes.split_at(plain_run(bytes));
        let Some((&b, rest)) = rest.split_first() else {
            step(run, None);
            return;
        };
        step(run, Some((b, ESCAPE[usize::from(b)])));
        bytes = rest;
    }
}

/// Whether [`escape_into`] would copy `bytes` unchanged.
pub(crate) fn needs_no_escape(bytes: &[u8]) -> bool {
    plain_run(bytes) == bytes.len()
}

/// `n` in decimal (a JSON number's digits), written at the end of `buf`.
pub fn write_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

/// How many bytes at the start of `bytes` a JSON string holds as
/// themselves (not `"`, `\` nor a control character), eight at a time:
/// where a string's contents end or have an escape.
#[inline(always)]
pub fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_le_bytes(chunk);
        let (quote, backslash) = (x ^ (ONES * 0x22), x ^ (ONES * 0x5c));
        // The high bit of each byte that is zero (a quote or a backslash
        // in `x`), or below 0x20: exact up to the first such byte, which
        // is all that is read.
        let special = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let special = special & (ONES * 0x80);
        if special != 0 {
            return at + (special.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let rest = bytes.get(at..).unwrap_or_default();
    at + rest
        .iter()
        .position(|&b| ESCAPE[usize::from(b)] != 0)
        .unwrap_or(rest.len())
}

/// The end of the escaped text, for [`Unescaper::next`].
const END: u32 = 0x100;
/// Any byte of a character past ASCII, for [`Unescaper::next`]: JSON gives
/// them no meaning outside strings (where they are an error) and allows them
/// inside.
const NON_ASCII: u32 = 0x80;

/// Reads the value of a JSON string from its escaped contents, one byte at
/// a time, counting the value's bytes, without writing it anywhere.
struct Unescaper<'a> {
    bytes: &'a [u8],
    at: usize,
    /// How many more bytes the escapes read so far take than the value's
    /// bytes they stand for: the value read so far is `at - saved` long.
    saved: usize,
}

impl Unescaper<'_> {
    /// The next byte of the value (a byte past ASCII as itself, or a
    /// character written as a `\u` escape as [`NON_ASCII`]), or [`END`] at
    /// the end of the contents and on anything a JSON string may not hold
    /// (a raw `"` or control character, an unknown escape, a lone
    /// surrogate), which the caller cannot tell from a premature end: both
    /// make the text invalid.
    #[inline(always)]
    fn next(&mut self) -> u32 {
        match self.bytes.get(self.at) {
            Some(&b) if b != b'\\' && b != b'"' && b >= 0x20 => {
                self.at += 1;
                u32::from(b)
            }
            // The escape most common by far: a quote of the text.
            Some(b'\\') if self.bytes.get(self.at + 1) == Some(&b'"') => {
                self.at += 2;
                self.saved += 1;
                0x22
            }
            Some(b'\\') => self.escape(),
            _ => END,
        }
    }

    /// Steps over the bytes that stand for themselves in a string of the
    /// text (not `\`, `"` nor a control character), all at once.
    #[inline(always)]
    fn skip_plain(&mut self) {
        self.at += plain_run(self.bytes.get(self.at..).unwrap_or_default());
    }

    /// Steps over digits (of the text: one written as a `\u` escape too);
    /// the byte after them.
    #[inline(always)]
    fn digits_then(&mut self) -> u32 {
        loop {
            let rest = self.bytes.get(self.at..).unwrap_or_default();
            self.at += rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let b = self.next();
            if !(0x30..=0x39).contains(&b) {
                return b;
            }
        }
    }

    /// An escape other than `\"`, at `at`: its character, counted.
    #[inline(never)]
    fn escape(&mut self) -> u32 {
        let Some((c, len)) = decode_escape(self.bytes.get(self.at..).unwrap_or_default()) else {
            return END;
        };
        self.at += len;
        self.saved += len - c.len_utf8();
        if c.is_ascii() { u32::from(c) } else { NON_ASCII }
    }

    /// The next byte that is not JSON whitespace.
    #[inline(always)]
    fn next_token(&mut self) -> u32 {
        loop {
            let b = self.next();
            if !matches!(b, 0x20 | 0x09 | 0x0a | 0x0d) {
                return b;
            }
        }
    }

    /// The rest of a string of the JSON text, its opening quote read.
    #[inline(always)]
    fn string(&mut self) -> Option<()> {
        loop {
            self.skip_plain();
            // The end of the string, as it most often is written.
            if self.bytes.get(self.at..self.at + 2) == Some(b"\\\"") {
                self.at += 2;
                self.saved += 1;
                return Some(());
            }
            match self.next() {
                0x22 => return Some(()),
                0x5c => match self.next() {
                    0x22 | 0x5c | 0x2f | 0x62 | 0x66 | 0x6e | 0x72 | 0x74 => {}
                    0x75 => {
                        for _ in 0..4 {
                            if !char::from_u32(self.next()).is_some_and(|c| c.is_ascii_hexdigit()) {
                                return None;
                            }
                        }
                    }
                    _ => return None,
                },
                END => return None,
                b if b < 0x20 => return None,
                _ => {}
            }
        }
    }

    /// The rest of a number whose first byte is `first`; the byte after it.
    fn number(&mut self, first: u32) -> Option<u32> {
        let digit = |b: u32| (0x30..=0x39).contains(&b);
        let mut b = first;
        if b == 0x2d {
            b = self.next();
        }
        b = match b {
            0x30 => self.next(),
            0x31..=0x39 => self.digits_then(),
            _ => return None,
        };
        if b == 0x2e {
            if !digit(self.next()) {
                return None;
            }
            b = self.digits_then();
        }
        if b == 0x65 || b == 0x45 {
            b = self.next();
            if b == 0x2b || b == 0x2d {
                b = self.next();
            }
            if !digit(b) {
                return None;
            }
            b = self.digits_then();
        }
        Some(b)
    }

    /// The rest of `true`, `false` or `null`, its first letter read.
    fn literal(&mut self, rest: &[u8]) -> Option<()> {
        rest.iter()
            .all(|&expected| self.next() == u32::from(expected))
            .then_some(())
    }
}

/// The escape at the start of `bytes` (its backslash first): the character
/// it stands for and the escape's length in bytes (12 for a surrogate pair
/// of `\u` escapes). `None` for an unknown escape, bad hex digits, a lone
/// surrogate, or an escape cut short.
fn decode_escape(bytes: &[u8]) -> Option<(char, usize)> {
    let (code, len) = match *bytes.get(1)? {
        letter @ (b'"' | b'\\' | b'/') => (u32::from(letter), 2),
        b'b' => (0x08, 2),
        b'f' => (0x0c, 2),
        b'n' => (0x0a, 2),
        b'r' => (0x0d, 2),
        b't' => (0x09, 2),
        b'u' => match hex4(bytes.get(2..6)?)? {
            first @ 0xD800..=0xDBFF => {
                let second = hex4(bytes.get(6..12)?.strip_prefix(b"\\u")?)?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return None;
                }
                (0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00), 12)
            }
            0xDC00..=0xDFFF => return None,
            code => (code, 6),
        },
        _ => return None,
    };
    Some((char::from_u32(code)?, len))
}

/// Four hex digits.
fn hex4(digits: &[u8]) -> Option<u32> {
    digits
        .iter()
        .try_fold(0u32, |n, &d| Some(n * 16 + char::from(d).to_digit(16)?))
}

/// The value of a JSON string whose contents (between the quotes) are
/// `contents`; `None` when they are not valid contents: an unescaped quote
/// or control character, an unknown escape, a bad or lone surrogate.
/// serde_json's reading of a string, without its per-escape costs (a payload
/// stored as an `S` has a `\"` every few bytes).
pub(crate) fn unescape(contents: &str) -> Option<String> {
    let bytes = contents.as_bytes();
    // Byte by byte into a buffer of the text's length (the value is never
    // longer): the runs between escapes are a few bytes long, shorter than
    // what a copy call costs.
    let mut out = vec![0u8; bytes.len()];
    let mut o = 0;
    let mut put = |b: u8| {
        if let Some(slot) = out.get_mut(o) {
            *slot = b;
        }
        o += 1;
    };
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => {
                let (c, len) = decode_escape(bytes.get(i..)?)?;
                c.encode_utf8(&mut [0; 4]).bytes().for_each(&mut put);
                i += len;
            }
            b'"' | 0..0x20 => return None,
            _ => {
                put(b);
                i += 1;
            }
        }
    }
    out.truncate(o);
    // Valid: the text was, and what replaced its escapes is whole characters.
    String::from_utf8(out).ok()
}

/// Open arrays and objects, one bit each (set for an object), up to
/// `MAX_DEPTH` of them.
struct Nesting<const WORDS: usize> {
    bits: [u64; WORDS],
    depth: usize,
}

impl<const WORDS: usize> Nesting<WORDS> {
    fn push(&mut self, object: bool) -> Option<()> {
        let (word, bit) = (self.depth / 64, self.depth % 64);
        let slot = self.bits.get_mut(word)?;
        *slot = (*slot & !(1 << bit)) | (u64::from(object) << bit);
        self.depth += 1;
        Some(())
    }

    /// Whether the innermost open container is an object.
    fn in_object(&self) -> bool {
        let top = self.depth - 1;
        self.bits[top / 64] >> (top % 64) & 1 == 1
    }
}

/// The length of the JSON text that the JSON string contents `escaped`
/// (the text between the quotes) hold, when that text is exactly one JSON
/// value, without whitespace around it, nested at most `max_depth` deep:
/// a text serde_json accepts as a `RawValue` and keeps whole (it trims
/// whitespace around a value). Checked in one pass over the escaped bytes,
/// without writing the text out.
///
/// `None` when it is not: the contents are not a valid string (a lone
/// surrogate included), the text is not JSON, or has whitespace around it.
/// Callers read it again the slow way to learn which.
pub(crate) fn validate_escaped(escaped: &str, max_depth: usize) -> Option<usize> {
    let (len, end) = validate(escaped.as_bytes(), max_depth)?;
    (end == escaped.len()).then_some(len)
}

/// [`validate_escaped`] on the contents of the JSON string that starts
/// `text` (its opening quote first), wherever the string ends: the length
/// of the value's text and of the escaped contents (the closing quote at
/// that offset, past the opening one). For reading a string out of a
/// larger JSON text in the same pass as its check.
pub(crate) fn validate_escaped_prefix(text: &str, max_depth: usize) -> Option<(usize, usize)> {
    let contents = text.as_bytes().strip_prefix(b"\"")?;
    let (len, end) = validate(contents, max_depth)?;
    (contents.get(end) == Some(&b'"')).then_some((len, end))
}

/// The check of [`validate_escaped`]: the value's length and where its
/// escaped text stopped (at the end of `escaped`, or at a byte a string
/// may not hold raw: a closing quote, when `escaped` goes on past it).
fn validate(escaped: &[u8], max_depth: usize) -> Option<(usize, usize)> {
    // 1,024 levels; deeper is refused whatever `max_depth` says.
    let mut nesting = Nesting::<16> {
        bits: [0; 16],
        depth: 0,
    };
    let mut text = Unescaper {
        bytes: escaped,
        at: 0,
        saved: 0,
    };
    // Around the outermost value, no whitespace: `next`, not `next_token`.
    let after_value = |text: &mut Unescaper<'_>, depth: usize| {
        if depth == 0 {
            text.next()
        } else {
            text.next_token()
        }
    };
    let mut b = text.next();
    loop {
        // A value starts at `b`.
        match b {
            0x7b | 0x5b => {
                let object = b == 0x7b;
                if nesting.depth >= max_depth {
                    return None;
                }
                nesting.push(object)?;
                b = text.next_token();
                if b == if object { 0x7d } else { 0x5d } {
                    nesting.depth -= 1;
                    b = after_value(&mut text, nesting.depth);
                } else {
                    if object {
                        b = key(&mut text, b)?;
                    }
                    continue;
                }
            }
            0x22 => {
                text.string()?;
                b = after_value(&mut text, nesting.depth);
            }
            0x2d | 0x30..=0x39 => {
                b = text.number(b)?;
                if nesting.depth > 0 && matches!(b, 0x20 | 0x09 | 0x0a | 0x0d) {
                    b = text.next_token();
                }
            }
            0x74 => {
                text.literal(b"rue")?;
                b = after_value(&mut text, nesting.depth);
            }
            0x66 => {
                text.literal(b"alse")?;
                b = after_value(&mut text, nesting.depth);
            }
            0x6e => {
                text.literal(b"ull")?;
                b = after_value(&mut text, nesting.depth);
            }
            _ => return None,
        }
        // A value has ended; `b` follows it.
        loop {
            if nesting.depth == 0 {
                return (b == END).then_some((text.at - text.saved, text.at));
            }
            let object = nesting.in_object();
            match b {
                0x2c => {
                    b = text.next_token();
                    if object {
                        b = key(&mut text, b)?;
                    }
                    break;
                }
                0x7d if object => {}
                0x5d if !object => {}
                _ => return None,
            }
            nesting.depth -= 1;
            b = after_value(&mut text, nesting.depth);
        }
    }
}

/// An object's key and colon, its first byte `b`; the byte that starts the
/// value.
#[inline(always)]
fn key(text: &mut Unescaper<'_>, b: u32) -> Option<u32> {
    if b != 0x22 {
        return None;
    }
    text.string()?;
    // The colon, most often right after the name.
    if text.bytes.get(text.at) == Some(&b':') {
        text.at += 1;
    } else if text.next_token() != 0x3a {
        return None;
    }
    Some(text.next_token())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    /// What serde_json says of the text that `escaped` holds: its length
    /// when it reads it as a JSON string whose value is one JSON value
    /// without whitespace around it.
    fn serde(escaped: &str) -> Option<usize> {
        let text: String = serde_json::from_str(&format!("\"{escaped}\"")).ok()?;
        let len = text.len();
        RawValue::from_string(text)
            .ok()
            .map(|raw| raw.get().len())
            .filter(|n| *n == len)
    }

    /// What serde_json says of the string that starts `text`: the lengths
    /// of its value and of its escaped contents, when the value is one JSON
    /// value without whitespace around it.
    fn serde_prefix(text: &str) -> Option<(usize, usize)> {
        let mut strings = serde_json::Deserializer::from_str(text).into_iter::<String>();
        let value = strings.next()?.ok()?;
        let literal_len = strings.byte_offset();
        let len = value.len();
        let raw = RawValue::from_string(value).ok()?;
        (raw.get().len() == len).then_some((len, literal_len - 2))
    }

    #[test]
    fn a_string_is_read_up_to_its_closing_quote() {
        let text = r#""{\"a\":\"\\\"\"}","next":1}"#;
        let contents = r#"{\"a\":\"\\\"\"}"#;
        assert_eq!(
            validate_escaped_prefix(text, 999),
            Some((r#"{"a":"\""}"#.len(), contents.len()))
        );
        assert_eq!(serde_prefix(text), validate_escaped_prefix(text, 999));
        for bad in [r#"{}"#, r#""{}"#, r#""{"}"#, r#""{} ""#, r#""\u0030\"#] {
            assert_eq!(validate_escaped_prefix(bad, 999), None, "{bad}");
        }
    }

    fn escaped(text: &str) -> String {
        let mut out = Vec::new();
        escape_into(&mut out, text.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn valid_texts_are_accepted_with_their_length() {
        for text in [
            "0",
            "-0",
            "-12.5e+3",
            "1E9",
            "0.0",
            "[ \t\n\r null \n]",
            "true",
            "false",
            r#""""#,
            r#""a\"b\\c\/\b\f\n\r\t\u00e9\uD800""#,
            "[]",
            "{}",
            r#"{"a":[1,{"b":[]},"c"],"d":{"e":null}}"#,
            r#"{ "k" : [ 1 , 2 ] , "l" : { } }"#,
            r#"{"orderId":"o-1","note":"ü € 😀 </script>","n":12345678901234567890123}"#,
            "[[[[[[[[[[]]]]]]]]]]",
        ] {
            assert_eq!(
                validate_escaped(&escaped(text), 999),
                Some(text.len()),
                "{text:?}"
            );
            assert_eq!(serde(&escaped(text)), Some(text.len()), "{text:?}");
        }
    }

    #[test]
    fn escapes_of_the_outer_string_are_read_as_what_they_stand_for() {
        // `{"a":"é😀"}` with every character escaped.
        let escaped = r#"\u007b\u0022a\u0022:\u0022\u00e9\ud83d\ude00\u0022\u007D"#;
        assert_eq!(validate_escaped(escaped, 999), Some(r#"{"a":"é😀"}"#.len()));
        assert_eq!(validate_escaped(r"[1,\/2]", 999), None);
        assert_eq!(validate_escaped(r"[\n1\r]", 999), Some(5));
    }

    #[test]
    fn invalid_texts_and_contents_are_refused() {
        for escaped in [
            "",
            " ",
            "{",
            "[1,]",
            r#"{\"a\":1,}"#,
            r#"{\"a\" 1}"#,
            r#"{1:2}"#,
            "[1 2]",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "nul",
            "nulll",
            "tru",
            "[1]]",
            "{}}",
            "[}",
            "{]",
            "1 2",
            r#"\"a"#,
            r#"\"\\x\""#,
            r#"\"\\u12G4\""#,
            r#"\"\u0001\""#,
            "\"",
            "[\u{1}]",
            r"\ud800",
            r"\udc00",
            r"[\",
            r"\x",
            "\u{c}1",
            " 1",
            "1 ",
            r"\n[]",
            r"[]\t",
            r"\u0020{}",
        ] {
            assert_eq!(validate_escaped(escaped, 999), None, "{escaped:?}");
            assert_eq!(serde(escaped), None, "serde_json too: {escaped:?}");
        }
    }

    #[test]
    fn depth_is_bounded() {
        let nested = |d: usize| format!("{}0{}", "[".repeat(d), "]".repeat(d));
        assert_eq!(validate_escaped(&nested(999), 999), Some(2 * 999 + 1));
        assert_eq!(validate_escaped(&nested(1000), 999), None);
        assert_eq!(validate_escaped(&nested(3), 2), None);
        assert_eq!(validate_escaped(&nested(1024), 5000), Some(2 * 1024 + 1));
        assert_eq!(validate_escaped(&nested(1025), 5000), None);
        let objects = format!("{}1{}", r#"{\"a\":"#.repeat(999), "}".repeat(999));
        assert!(validate_escaped(&objects, 999).is_some());
    }

    #[test]
    fn escaping_reads_back_as_the_same_text_in_any_pieces() {
        let text = "a\"b\\c\u{0}\u{1f} \n\r\t\u{8}\u{c} ü€😀 \u{7f}/";
        for cut in 0..=text.len() {
            let mut out = b"\"".to_vec();
            escape_into(&mut out, &text.as_bytes()[..cut]);
            escape_into(&mut out, &text.as_bytes()[cut..]);
            out.push(b'"');
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, text, "cut at {cut}");
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "as serde_json escapes it");
        }
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            assert_eq!(write_u64(n, &mut [0; 20]), n.to_string());
        }
    }

    #[test]
    fn lengths_count_what_escape_into_writes() {
        for text in ["", "abc", "a\"b\\c\u{0}\u{1f}\n\r\t\u{8}\u{c}\u{7f}é😀"] {
            assert_eq!(escaped_len(text.as_bytes()), escaped(text).len(), "{text:?}");
            assert_eq!(needs_no_escape(text.as_bytes()), escaped(text) == text);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        /// Escaping eight bytes at a time writes and counts what serde_json
        /// writes for any text, with the bytes to escape anywhere in it.
        #[test]
        fn escaping_is_serde_jsons(
            text in prop_oneof![
                any::<String>(),
                proptest::collection::vec(
                    prop::sample::select(vec!["a", "\"", "\\", "\u{0}", "\u{1f}", "\n", "\u{7f}", "é", "😀", "abcdefgh"]),
                    0..40,
                ).prop_map(|pieces| pieces.concat()),
            ]
        ) {
            let serde = serde_json::to_string(&text).unwrap();
            let inner = &serde[1..serde.len() - 1];
            prop_assert_eq!(escaped(&text), inner);
            prop_assert_eq!(escaped_len(text.as_bytes()), inner.len());
            prop_assert_eq!(needs_no_escape(text.as_bytes()), inner == text);
        }
    }

    /// Pieces of JSON texts, valid and broken.
    fn json_piece() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec![
                "{", "}", "[", "]", ",", ":", " ", "\n", "\"", "\"k\"", "\"k\":", "1", "-0.5e+7",
                "0", "true", "false", "null", "\"\\\"\"", "\"\\u00e9\"", "\"é😀\"", "\"\\ud800\"",
            ]).prop_map(str::to_owned),
            1 => "[0-9eE.+\\-]{1,4}",
            1 => "\\\\[\"\\\\/bfnrtux]",
            1 => "[\u{0}-\u{7f}]",
            1 => any::<char>().prop_map(String::from),
        ]
    }

    /// A JSON text: any value, some with whitespace between tokens.
    fn json_text() -> impl Strategy<Value = String> {
        let ws = prop::sample::select(vec!["", "", "", " ", "\n\t", "\r "]);
        let leaf = prop_oneof![
            prop::sample::select(vec!["null", "true", "false"]).prop_map(str::to_owned),
            "-?(0|[1-9][0-9]{0,5})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?",
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
            "[a-z\\\\\"/]{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ];
        leaf.prop_recursive(6, 48, 5, move |inner| {
            let ws = ws.clone();
            prop_oneof![
                (prop::collection::vec((inner.clone(), ws.clone()), 0..5)).prop_map(|items| {
                    let items: Vec<String> = items.into_iter().map(|(v, w)| format!("{w}{v}{w}")).collect();
                    format!("[{}]", items.join(","))
                }),
                (prop::collection::vec(("[a-z\"\\\\é]{0,4}", inner, ws), 0..5)).prop_map(|entries| {
                    let entries: Vec<String> = entries
                        .into_iter()
                        .map(|(k, v, w)| format!("{w}{}{w}:{w}{v}", serde_json::to_string(&k).unwrap()))
                        .collect();
                    format!("{{{}}}", entries.join(","))
                }),
            ]
        })
    }

    /// A JSON text, half the time broken in one place (a character taken
    /// out, or a piece put in), or pieces of JSON put together.
    fn nearly_json() -> impl Strategy<Value = String> {
        prop_oneof![
            2 => json_text(),
            2 => (json_text(), any::<prop::sample::Index>(), json_piece(), any::<bool>()).prop_map(
                |(text, at, piece, remove)| {
                    let chars: Vec<char> = text.chars().collect();
                    let at = at.index(chars.len() + 1);
                    let mut out: String = chars[..at].iter().collect();
                    if !remove {
                        out.push_str(&piece);
                    }
                    out.extend(chars.iter().skip(if remove { at + 1 } else { at }));
                    out
                }
            ),
            1 => prop::collection::vec(json_piece(), 0..12).prop_map(|p| p.concat()),
        ]
    }

    /// A generated text, escaped by serde_json, or with some of its
    /// characters as `\u` escapes.
    fn escaped_texts() -> impl Strategy<Value = String> {
        (nearly_json(), any::<u8>()).prop_map(|(text, mask)| {
            let literal = serde_json::to_string(&text).unwrap();
            let contents = &literal[1..literal.len() - 1];
            if mask % 3 != 0 {
                return contents.to_owned();
            }
            contents
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if c != '\\' && (i as u8) & mask & 0x0c != 0 {
                        c.encode_utf16(&mut [0; 2])
                            .iter()
                            .map(|u| format!("\\u{u:04x}"))
                            .collect()
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        })
    }

    #[test]
    fn the_generated_texts_are_valid_often_and_invalid_often() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = escaped_texts();
        let valid = (0..2_000)
            .filter(|_| {
                let escaped = strategy.new_tree(&mut runner).unwrap().current();
                validate_escaped(&escaped, 999).is_some()
            })
            .count();
        assert!((600..=1_400).contains(&valid), "{valid} of 2,000 valid");
    }

    proptest! {
        /// Eight bytes at a time, the run ends where a byte at a time it
        /// does: at the first quote, backslash or control character.
        #[test]
        fn a_plain_run_ends_at_the_first_byte_a_string_escapes(
            bytes in prop::collection::vec(prop_oneof![any::<u8>(), 0x20u8..0x7f, Just(b'"'), Just(b'\\')], 0..80),
        ) {
            let expected = bytes.iter().position(|&b| ESCAPE[usize::from(b)] != 0).unwrap_or(bytes.len());
            prop_assert_eq!(plain_run(&bytes), expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        /// Accepted is what serde_json accepts, with the same length: on
        /// generated texts (pieces of JSON, escaped in several ways) and on
        /// any contents at all.
        #[test]
        fn it_accepts_exactly_what_serde_json_accepts(
            generated in escaped_texts(),
            any_contents in any::<String>(),
            pieces in prop::collection::vec(json_piece(), 0..12),
        ) {
            for escaped in [generated, any_contents, pieces.concat()] {
                prop_assert_eq!(validate_escaped(&escaped, 999), serde(&escaped), "{:?}", escaped);
                // The same contents as a string at the start of a longer
                // text: read up to the first raw quote, as serde_json does.
                let text = format!("\"{escaped}\",1]");
                prop_assert_eq!(validate_escaped_prefix(&text, 999), serde_prefix(&text), "{:?}", text);
            }
        }
    }
}
