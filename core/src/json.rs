//! JSON re-encoding that matches JavaScript byte for byte.
//!
//! Receivers of our webhooks check the HMAC signature over
//! `JSON.stringify(JSON.parse(body))`, not over the bytes we were sent. So the
//! daemon must re-emit every event exactly as a JavaScript engine would
//! re-stringify it, or every signature fails. A general-purpose JSON library
//! cannot do that: it does not know JavaScript's rules for
//!
//! * numbers, which become IEEE-754 doubles and are printed with
//!   `Number::toString` (`1.0` is `1`, `1e21` is `1e+21`, `-0` is `0`,
//!   `1e400` is `null`);
//! * object keys, where a repeated key keeps the place of its first occurrence
//!   and the value of its last, and where keys that are array indices
//!   (`"0"` ..= `"4294967294"`) come first in ascending numeric order, then all
//!   other keys in insertion order;
//! * strings, which are UTF-16: `\uD800` on its own is a legal JSON string that
//!   no Rust `String` can hold, and `JSON.stringify` (ES2019 well-formed
//!   version) writes it back as `\ud800` while writing everything else that
//!   needs no escaping (`/`, U+2028, emoji) literally.
//!
//! [`canonicalize`] does the whole round trip in one pass over the input,
//! writing the output as it goes and only rewriting an object when its keys
//! need reordering or deduplication. [`parse`] does the same round trip into a
//! [`Value`] tree whose objects are already in canonical order and whose
//! strings carry their canonical escaped form, so callers can read fields and
//! still write the exact canonical text with [`Value::write_canonical`].
//!
//! The accepted grammar is exactly `JSON.parse`'s (RFC 8259): whitespace is
//! space, tab, LF and CR only; no comments, trailing commas, leading zeros,
//! `NaN` or raw control characters in strings. The input must be UTF-8 and may
//! nest arrays and objects at most [`MAX_DEPTH`] levels deep.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// How deeply arrays and objects may nest before parsing fails.
///
/// JavaScript allows much deeper nesting; the limit keeps hostile input from
/// exhausting the stack. `[[1]]` has depth 2.
pub(crate) const MAX_DEPTH: usize = 128;

/// Objects with at most this many members find duplicate keys by comparing
/// every pair; larger ones use a hash map.
const LINEAR_SCAN_LIMIT: usize = 32;

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Why a JSON text was rejected, and where.
///
/// Displays as `"{message} at line {line} column {column}"`, for example
/// `expected ',' or '}' at line 3 column 7`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at line {line} column {column}")]
#[non_exhaustive]
pub(crate) struct JsonError {
    /// 1-based line of the offending input; lines end at LF.
    pub line: usize,
    /// 1-based column of the offending input, counted in characters.
    pub column: usize,
    /// 0-based byte offset of the offending input.
    pub offset: usize,
    /// What was wrong: lowercase, no trailing period.
    pub message: String,
}

/// Parses one JSON text and returns what JavaScript's
/// `JSON.stringify(JSON.parse(text))` produces for it.
///
/// # Errors
///
/// Fails if `input` is not valid UTF-8, is not a single JSON value as
/// `JSON.parse` accepts it, or nests deeper than [`MAX_DEPTH`].
pub(crate) fn canonicalize(input: &[u8]) -> Result<String, JsonError> {
    let mut out = String::with_capacity(input.len());
    canonicalize_into(input, &mut out)?;
    Ok(out)
}

/// Like [`canonicalize`], but appends the canonical text to `out`.
///
/// On error `out` is left as it was.
///
/// # Errors
///
/// The same as [`canonicalize`].
pub(crate) fn canonicalize_into(input: &[u8], out: &mut String) -> Result<(), JsonError> {
    let original_len = out.len();
    let mut parser = Parser::new(input);
    let result = parser.canonical_document(out);
    if result.is_err() {
        out.truncate(original_len);
    }
    result
}

/// Parses one JSON text the way `JSON.parse` does.
///
/// The returned [`Value`] is already canonical: objects have their duplicate
/// keys collapsed and their keys in `JSON.stringify` order, and
/// [`Value::write_canonical`] writes exactly what [`canonicalize`] returns for
/// the same input.
///
/// # Errors
///
/// The same as [`canonicalize`].
pub(crate) fn parse(input: &[u8]) -> Result<Value, JsonError> {
    parse_nesting(input, MAX_DEPTH)
}

/// [`parse`] of `[joined]`: values joined by commas (as the store keeps a
/// batch's events), as one array. The array itself does not count toward
/// [`MAX_DEPTH`], so every value that parsed alone parses here too.
pub(crate) fn parse_joined(joined: &str) -> Result<Value, JsonError> {
    parse_nesting(format!("[{joined}]").as_bytes(), MAX_DEPTH + 1)
}

/// [`parse`] with containers nested at most `max_depth` deep.
fn parse_nesting(input: &[u8], max_depth: usize) -> Result<Value, JsonError> {
    let mut parser = Parser::new(input);
    parser.max_depth = max_depth;
    parser.skip_whitespace();
    let value = parser.value()?;
    parser.expect_end()?;
    Ok(value)
}

/// One object of a joined text read by [`scan_joined`]: its text, and the
/// values of the top-level keys asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scanned<'a, const N: usize> {
    /// The object's text, braces included.
    pub text: &'a str,
    /// Per key asked for, its value when it is a string without escapes.
    pub fields: [Option<&'a str>; N],
}

/// Splits objects joined by commas (`{…},{…}`, as the stores keep events
/// Hookline canonicalised itself) without parsing them into values: it
/// follows strings and nesting only, and picks the string values of `keys`
/// at the top level of each object. `None` when the text is not shaped so
/// (unbalanced, a value it cannot follow, nesting past [`MAX_DEPTH`]) or a
/// wanted value holds an escape: the caller parses instead, which also
/// explains what is wrong. It does not validate literals or numbers: use
/// it only on text Hookline wrote.
pub(crate) fn scan_joined<'a, const N: usize>(joined: &'a str, keys: [&str; N]) -> Option<Vec<Scanned<'a, N>>> {
    let bytes = joined.as_bytes();
    let mut objects = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'{' {
            return None;
        }
        let start = i;
        let mut fields = [None; N];
        let mut depth = 0usize;
        // One bit per open container, 1 for an object: a closing bracket
        // must match (MAX_DEPTH is 128).
        let mut objects_open: u128 = 0;
        // At depth 1: the next string is a key; the key just read is
        // wanted (its index in `keys`).
        let mut key_next = false;
        let mut wanted: Option<usize> = None;
        loop {
            match *bytes.get(i)? {
                open @ (b'{' | b'[') => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return None;
                    }
                    objects_open = (objects_open << 1) | u128::from(open == b'{');
                    key_next = open == b'{' && depth == 1;
                    wanted = None;
                    i += 1;
                }
                close @ (b'}' | b']') => {
                    if (objects_open & 1 == 1) != (close == b'}') {
                        return None;
                    }
                    objects_open >>= 1;
                    depth -= 1;
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
                b'"' => {
                    let (end, escaped) = js_string_end(bytes, i)?;
                    let inside = &joined[i + 1..end - 1];
                    if depth == 1 && key_next {
                        key_next = false;
                        wanted = if escaped {
                            None
                        } else {
                            keys.iter().position(|k| *k == inside)
                        };
                    } else if depth == 1
                        && let Some(k) = wanted.take()
                    {
                        if escaped {
                            return None;
                        }
                        fields[k] = Some(inside);
                    }
                    i = end;
                }
                b',' => {
                    key_next = depth == 1;
                    wanted = None;
                    i += 1;
                }
                b':' => i += 1,
                _ => {
                    if depth == 1 {
                        wanted = None;
                    }
                    i += 1;
                }
            }
        }
        objects.push(Scanned {
            text: &joined[start..i],
            fields,
        });
        match bytes.get(i) {
            None => break,
            Some(b',') if i + 1 < bytes.len() => i += 1,
            Some(_) => return None,
        }
    }
    Some(objects)
}

/// Where the string starting with the quote at `open` ends (just past its
/// closing quote), and whether it holds an escape.
fn js_string_end(bytes: &[u8], open: usize) -> Option<(usize, bool)> {
    let mut i = open + 1;
    let mut escaped = false;
    loop {
        match *bytes.get(i)? {
            b'"' => return Some((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                i += 2;
            }
            _ => i += 1,
        }
    }
}

/// Appends `s` as `JSON.stringify` writes a string: in double quotes, with
/// `"` and `\` escaped, control characters as `\b`, `\f`, `\n`, `\r`, `\t` or
/// `\u00xx` (lowercase hex), and everything else literally.
pub(crate) fn write_js_string(s: &str, out: &mut String) {
    out.push('"');
    escape_str(s, out);
    out.push('"');
}

/// Appends `n` as `JSON.stringify` writes a number: JavaScript's
/// `Number::toString`, except that NaN and the infinities become `null`.
/// Negative zero is written as `0`.
pub(crate) fn write_js_number(n: f64, out: &mut String) {
    if !n.is_finite() {
        out.push_str("null");
    } else if n == 0.0 {
        out.push('0');
    } else {
        out.push_str(ryu_js::Buffer::new().format_finite(n));
    }
}

/// A parsed JSON value, as `JSON.parse` would build it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, rounded to the nearest double as JavaScript does. It may be
    /// infinite (`1e400`) or negative zero (`-0`); both are written as
    /// `JSON.stringify` writes them (`null`, `0`).
    Number(f64),
    /// A string.
    String(JsString),
    /// An array.
    Array(Vec<Value>),
    /// An object, with unique keys in canonical order.
    Object(Object),
}

impl Value {
    /// Appends the `JSON.stringify` text of this value to `out`.
    pub fn write_canonical(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(true) => out.push_str("true"),
            Value::Bool(false) => out.push_str("false"),
            Value::Number(n) => write_js_number(*n, out),
            Value::String(s) => s.write_canonical(out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_canonical(out);
                }
                out.push(']');
            }
            Value::Object(object) => object.write_canonical(out),
        }
    }

    /// Returns the `JSON.stringify` text of this value.
    pub fn to_canonical_string(&self) -> String {
        let mut out = String::with_capacity(self.canonical_len_bound());
        self.write_canonical(&mut out);
        out
    }

    /// At least the length of [`Value::write_canonical`]'s text, exactly
    /// that unless the value holds a number with a fraction or an
    /// exponent: what to reserve so that writing it never grows the buffer.
    pub fn canonical_len_bound(&self) -> usize {
        let commas = |n: usize| n.saturating_sub(1);
        match self {
            Value::Null | Value::Bool(true) => 4,
            Value::Bool(false) => 5,
            Value::Number(n) => number_len_bound(*n),
            Value::String(s) => s.canonical.len() + 2,
            Value::Array(items) => {
                2 + commas(items.len()) + items.iter().map(Value::canonical_len_bound).sum::<usize>()
            }
            Value::Object(object) => {
                2 + commas(object.members.len())
                    + object
                        .members
                        .iter()
                        .map(|(key, value)| key.canonical.len() + 3 + value.canonical_len_bound())
                        .sum::<usize>()
            }
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The boolean, if this is `true` or `false`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The number, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The string, if this is a string without lone surrogates; see
    /// [`JsString::as_str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => s.as_str(),
            _ => None,
        }
    }

    /// The string in full, if this is a string.
    pub fn as_js_string(&self) -> Option<&JsString> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The object, if this is an object.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(object) => Some(object),
            _ => None,
        }
    }

    /// The value of member `key`, if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?.get(key)
    }
}

impl fmt::Display for Value {
    /// Writes the `JSON.stringify` text of the value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_canonical_string())
    }
}

/// At least the length of `JSON.stringify(n)`; exact for whole numbers
/// below 10^21, which it writes as plain digits. A body of many small
/// numbers must not reserve the longest number's room for each.
fn number_len_bound(n: f64) -> usize {
    /// `JSON.stringify`'s longest numbers: 17 digits after `-0.00000`,
    /// as in `-0.0000012345678901234567`.
    const LONGEST_NUMBER: usize = 25;
    if n.is_finite() && n.fract() == 0.0 && n.abs() < 1e21 {
        // Whole and below 2^70: exact as an integer.
        let digits = (n.abs() as u128).checked_ilog10().map_or(1, |d| d as usize + 1);
        // `-0` is written `0`.
        return usize::from(n < 0.0) + digits;
    }
    LONGEST_NUMBER
}

/// A JSON object: unique keys, in the order `JSON.stringify` writes them
/// (array-index keys ascending, then the others in order of first occurrence).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object {
    members: Vec<(JsString, Value)>,
}

impl Object {
    /// The value of member `key`. Keys with lone surrogates never match.
    ///
    /// This is a linear search, which suits the small objects of event
    /// payloads.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.members
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the object has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members as (key, value) pairs, in canonical order.
    pub fn iter(&self) -> ObjectIter<'_> {
        self.members.iter().map(|(k, v)| (k, v))
    }

    /// The members as (key, value) pairs, in canonical order.
    pub fn members(&self) -> &[(JsString, Value)] {
        &self.members
    }

    /// Appends the `JSON.stringify` text of this object to `out`.
    pub fn write_canonical(&self, out: &mut String) {
        out.push('{');
        for (i, (key, value)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            key.write_canonical(out);
            out.push(':');
            value.write_canonical(out);
        }
        out.push('}');
    }
}

/// Iterator over the (key, value) pairs of an [`Object`], in canonical order.
pub(crate) type ObjectIter<'a> =
    std::iter::Map<std::slice::Iter<'a, (JsString, Value)>, fn(&'a (JsString, Value)) -> (&'a JsString, &'a Value)>;

impl<'a> IntoIterator for &'a Object {
    type Item = (&'a JsString, &'a Value);
    type IntoIter = ObjectIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// A JavaScript string: a sequence of UTF-16 code units, which may include
/// lone surrogates (from escapes such as `"\ud800"`).
///
/// It is stored as its canonical escaped form (what `JSON.stringify` writes
/// between the quotes, always valid UTF-8 because lone surrogates are written
/// as `\udxxx` escapes) plus, where that differs, the decoded text. Two
/// strings are equal exactly when their canonical forms are.
///
/// [`as_str`](Self::as_str) returns `None` for strings with lone surrogates;
/// [`as_str_lossy`](Self::as_str_lossy) returns them with each lone surrogate
/// replaced by U+FFFD.
#[derive(Clone)]
pub struct JsString {
    /// What `JSON.stringify` writes between the quotes.
    canonical: Box<str>,
    decoded: Decoded,
}

#[derive(Clone)]
enum Decoded {
    /// The decoded text equals the canonical form (nothing needed escaping).
    SameAsCanonical,
    /// The decoded text, valid UTF-16 and so valid UTF-8.
    WellFormed(Box<str>),
    /// The decoded text with every lone surrogate replaced by U+FFFD.
    LoneSurrogates(Box<str>),
}

impl JsString {
    /// The text, unless it contains lone surrogates (which a Rust string
    /// cannot hold), in which case `None`.
    pub fn as_str(&self) -> Option<&str> {
        match &self.decoded {
            Decoded::SameAsCanonical => Some(&self.canonical),
            Decoded::WellFormed(s) => Some(s),
            Decoded::LoneSurrogates(_) => None,
        }
    }

    /// The text, with each lone surrogate replaced by U+FFFD.
    pub fn as_str_lossy(&self) -> &str {
        match &self.decoded {
            Decoded::SameAsCanonical => &self.canonical,
            Decoded::WellFormed(s) | Decoded::LoneSurrogates(s) => s,
        }
    }

    /// Whether the string has no lone surrogates, so that
    /// [`as_str`](Self::as_str) returns it.
    pub fn is_well_formed(&self) -> bool {
        !matches!(self.decoded, Decoded::LoneSurrogates(_))
    }

    /// What `JSON.stringify` writes for this string, without the surrounding
    /// quotes.
    pub fn escaped(&self) -> &str {
        &self.canonical
    }

    /// Appends what `JSON.stringify` writes for this string, quotes included.
    pub fn write_canonical(&self, out: &mut String) {
        out.push('"');
        out.push_str(&self.canonical);
        out.push('"');
    }

    /// Builds the string from the escaped form and the decoding state that
    /// the parser collected.
    fn from_parts(canonical: String, decoded: DecodeState) -> JsString {
        let decoded = if decoded.lone_surrogates {
            Decoded::LoneSurrogates(decoded.text.into_boxed_str())
        } else if decoded.text == canonical {
            Decoded::SameAsCanonical
        } else {
            Decoded::WellFormed(decoded.text.into_boxed_str())
        };
        JsString {
            canonical: canonical.into_boxed_str(),
            decoded,
        }
    }
}

impl From<&str> for JsString {
    fn from(s: &str) -> JsString {
        let mut canonical = String::with_capacity(s.len());
        escape_str(s, &mut canonical);
        let decoded = if canonical == s {
            Decoded::SameAsCanonical
        } else {
            Decoded::WellFormed(s.into())
        };
        JsString {
            canonical: canonical.into_boxed_str(),
            decoded,
        }
    }
}

impl PartialEq for JsString {
    fn eq(&self, other: &JsString) -> bool {
        self.canonical == other.canonical
    }
}

impl Eq for JsString {}

impl std::hash::Hash for JsString {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.canonical.hash(state);
    }
}

impl PartialEq<str> for JsString {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl PartialEq<&str> for JsString {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl fmt::Debug for JsString {
    /// Writes the canonical JSON form, quotes included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.canonical)
    }
}

/// Decoded text collected while a string with escapes is parsed.
#[derive(Default)]
struct DecodeState {
    text: String,
    lone_surrogates: bool,
}

/// Where one member of the object being canonicalized lies in the output:
/// the key (quotes included) is `key_start..key_end`, then a `:`, then the
/// value up to `value_end`.
#[derive(Clone, Copy)]
struct MemberSpan {
    key_start: usize,
    key_end: usize,
    value_end: usize,
}

/// A number token; `small_int` is its exact value when it is an integer of at
/// most 15 digits without fraction or exponent (canonical as written, except
/// `-0`).
struct NumberToken {
    start: usize,
    end: usize,
    small_int: Option<f64>,
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
    /// Containers nested deeper than this are refused.
    max_depth: usize,
    /// Members of the objects being canonicalized, innermost last.
    spans: Vec<MemberSpan>,
    /// Copy of an object's output while it is rewritten in canonical order.
    scratch: String,
    /// Elements of the arrays being parsed, innermost last.
    values: Vec<Value>,
    /// Members of the objects being parsed, innermost last.
    members: Vec<(JsString, Value)>,
}

impl<'a> Parser<'a> {
    fn new(bytes: &'a [u8]) -> Parser<'a> {
        Parser {
            bytes,
            pos: 0,
            depth: 0,
            max_depth: MAX_DEPTH,
            spans: Vec::new(),
            scratch: String::new(),
            values: Vec::new(),
            members: Vec::new(),
        }
    }

    // ----- shared lexing -------------------------------------------------

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    #[cold]
    fn error_at(&self, pos: usize, message: impl Into<String>) -> JsonError {
        let pos = pos.min(self.bytes.len());
        let prefix = &self.bytes[..pos];
        let line = 1 + prefix.iter().filter(|&&b| b == b'\n').count();
        let line_start = prefix.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        // Count characters, not bytes: skip UTF-8 continuation bytes.
        let column = 1 + prefix[line_start..].iter().filter(|&&b| b & 0xC0 != 0x80).count();
        JsonError {
            line,
            column,
            offset: pos,
            message: message.into(),
        }
    }

    /// An error at the current position saying what was expected there.
    #[cold]
    fn expected(&self, what: &str) -> JsonError {
        if self.pos >= self.bytes.len() {
            self.error_at(self.pos, format!("unexpected end of input, expected {what}"))
        } else {
            self.error_at(self.pos, format!("expected {what}"))
        }
    }

    fn expect_end(&mut self) -> Result<(), JsonError> {
        self.skip_whitespace();
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(self.error_at(self.pos, "expected end of input after the JSON value"))
        }
    }

    fn enter_container(&mut self) -> Result<(), JsonError> {
        if self.depth == self.max_depth {
            return Err(self.error_at(
                self.pos,
                format!("nesting deeper than {MAX_DEPTH} levels is not allowed"),
            ));
        }
        self.depth += 1;
        self.pos += 1;
        self.skip_whitespace();
        Ok(())
    }

    /// Consumes `word` (`true`, `false` or `null`), whose first byte has been
    /// seen.
    fn literal(&mut self, word: &str) -> Result<(), JsonError> {
        for (i, &expected) in word.as_bytes().iter().enumerate() {
            if self.bytes.get(self.pos + i) != Some(&expected) {
                self.pos += i;
                return Err(self.expected(&format!("'{word}'")));
            }
        }
        self.pos += word.len();
        Ok(())
    }

    /// Lexes a number starting at the current position (`-` or a digit).
    fn number(&mut self) -> Result<NumberToken, JsonError> {
        let bytes = self.bytes;
        let start = self.pos;
        let mut i = start;
        let negative = bytes.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        let int_start = i;
        let mut int_value: u64 = 0;
        match bytes.get(i) {
            Some(b'0') => {
                i += 1;
                if matches!(bytes.get(i), Some(b'0'..=b'9')) {
                    return Err(self.error_at(i, "leading zeros are not allowed in numbers"));
                }
            }
            Some(b'1'..=b'9') => {
                while let Some(&d @ b'0'..=b'9') = bytes.get(i) {
                    int_value = int_value.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                    i += 1;
                }
            }
            _ => {
                self.pos = i;
                return Err(self.expected("a digit after '-'"));
            }
        }
        let mut small = i - int_start <= 15;
        if bytes.get(i) == Some(&b'.') {
            small = false;
            i += 1;
            if !matches!(bytes.get(i), Some(b'0'..=b'9')) {
                self.pos = i;
                return Err(self.expected("a digit after the decimal point"));
            }
            while let Some(b'0'..=b'9') = bytes.get(i) {
                i += 1;
            }
        }
        if let Some(b'e' | b'E') = bytes.get(i) {
            small = false;
            i += 1;
            if let Some(b'+' | b'-') = bytes.get(i) {
                i += 1;
            }
            if !matches!(bytes.get(i), Some(b'0'..=b'9')) {
                self.pos = i;
                return Err(self.expected("a digit in the exponent"));
            }
            while let Some(b'0'..=b'9') = bytes.get(i) {
                i += 1;
            }
        }
        self.pos = i;
        let small_int = small.then(|| {
            // At most 15 digits: exact in a double.
            let v = int_value as f64;
            if negative { -v } else { v }
        });
        Ok(NumberToken {
            start,
            end: i,
            small_int,
        })
    }

    /// The double a number token denotes, rounded as JavaScript rounds.
    fn number_value(&self, token: &NumberToken) -> Result<f64, JsonError> {
        if let Some(v) = token.small_int {
            return Ok(v);
        }
        // The token matched the JSON number grammar, which Rust's
        // correctly-rounded float parser accepts; the error arm is unreachable.
        std::str::from_utf8(&self.bytes[token.start..token.end])
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| self.error_at(token.start, "invalid number"))
    }

    /// The bytes `start..end` of a string's unescaped run, checked to be
    /// UTF-8.
    #[inline]
    fn run_str(&self, start: usize, end: usize) -> Result<&'a str, JsonError> {
        let bytes: &'a [u8] = self.bytes;
        std::str::from_utf8(&bytes[start..end])
            .map_err(|e| self.error_at(start + e.valid_up_to(), "invalid UTF-8 byte sequence in string"))
    }

    /// Lexes the rest of a string whose opening quote has been consumed,
    /// appending its canonical escaped form to `out` and, if `decoded` is
    /// given, its decoded text there. Consumes the closing quote.
    fn string_body(&mut self, out: &mut String, mut decoded: Option<&mut DecodeState>) -> Result<(), JsonError> {
        loop {
            let start = self.pos;
            let end = scan_plain(self.bytes, start);
            if end > start {
                let run = self.run_str(start, end)?;
                out.push_str(run);
                if let Some(d) = decoded.as_deref_mut() {
                    d.text.push_str(run);
                }
            }
            self.pos = end;
            match self.bytes.get(end) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => self.escape(out, decoded.as_deref_mut())?,
                Some(&c) => {
                    return Err(self.error_at(end, format!("unescaped control character 0x{c:02x} in string")));
                }
                None => return Err(self.expected("'\"' to close the string")),
            }
        }
    }

    /// Handles the escape sequence at the current position (a backslash).
    fn escape(&mut self, out: &mut String, decoded: Option<&mut DecodeState>) -> Result<(), JsonError> {
        let escape_pos = self.pos;
        self.pos += 1;
        let Some(c) = self.peek() else {
            return Err(self.expected("an escape sequence"));
        };
        self.pos += 1;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        let low = match self.bytes.get(self.pos..self.pos + 2) {
                            Some(b"\\u") => {
                                hex4_at(self.bytes, self.pos + 2).filter(|low| (0xDC00..=0xDFFF).contains(low))
                            }
                            _ => None,
                        };
                        if let Some(low) = low {
                            self.pos += 6;
                            let cp = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                            char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER)
                        } else {
                            push_lone_surrogate(unit, out, decoded);
                            return Ok(());
                        }
                    }
                    0xDC00..=0xDFFF => {
                        push_lone_surrogate(unit, out, decoded);
                        return Ok(());
                    }
                    _ => char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER),
                }
            }
            _ => {
                return Err(self.error_at(
                    escape_pos,
                    "invalid escape sequence, expected one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u",
                ));
            }
        };
        push_escaped_char(ch, out);
        if let Some(d) = decoded {
            d.text.push(ch);
        }
        Ok(())
    }

    /// Consumes the four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Result<u32, JsonError> {
        let mut unit = 0;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(hex_value)
                .ok_or_else(|| self.expected("4 hex digits after '\\u'"))?;
            unit = unit << 4 | digit;
            self.pos += 1;
        }
        Ok(unit)
    }

    // ----- streaming canonicalization --------------------------------------

    fn canonical_document(&mut self, out: &mut String) -> Result<(), JsonError> {
        self.skip_whitespace();
        self.canonical_value(out)?;
        self.expect_end()
    }

    /// Appends the canonical form of the value at the current position.
    fn canonical_value(&mut self, out: &mut String) -> Result<(), JsonError> {
        match self.peek() {
            Some(b'{') => self.canonical_object(out),
            Some(b'[') => self.canonical_array(out),
            Some(b'"') => {
                self.pos += 1;
                out.push('"');
                self.string_body(out, None)?;
                out.push('"');
                Ok(())
            }
            Some(b't') => {
                self.literal("true")?;
                out.push_str("true");
                Ok(())
            }
            Some(b'f') => {
                self.literal("false")?;
                out.push_str("false");
                Ok(())
            }
            Some(b'n') => {
                self.literal("null")?;
                out.push_str("null");
                Ok(())
            }
            Some(b'-' | b'0'..=b'9') => {
                let token = self.number()?;
                match token.small_int {
                    // Small integers other than zero print as written.
                    Some(v) if v != 0.0 => {
                        for &b in &self.bytes[token.start..token.end] {
                            out.push(char::from(b));
                        }
                    }
                    Some(_) => out.push('0'),
                    None => write_js_number(self.number_value(&token)?, out),
                }
                Ok(())
            }
            _ => Err(self.expected("a JSON value")),
        }
    }

    fn canonical_array(&mut self, out: &mut String) -> Result<(), JsonError> {
        self.enter_container()?;
        out.push('[');
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                self.canonical_value(out)?;
                self.skip_whitespace();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        out.push(',');
                        self.skip_whitespace();
                        if self.peek() == Some(b']') {
                            return Err(self.trailing_comma("a JSON value"));
                        }
                    }
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.expected("',' or ']'")),
                }
            }
        }
        out.push(']');
        self.depth -= 1;
        Ok(())
    }

    fn canonical_object(&mut self, out: &mut String) -> Result<(), JsonError> {
        self.enter_container()?;
        out.push('{');
        let body_start = out.len();
        let base = self.spans.len();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                if self.peek() != Some(b'"') {
                    return Err(if self.spans.len() == base {
                        self.expected("a string key or '}'")
                    } else {
                        self.expected("a string key")
                    });
                }
                self.pos += 1;
                let key_start = out.len();
                out.push('"');
                self.string_body(out, None)?;
                out.push('"');
                let key_end = out.len();
                self.skip_whitespace();
                if self.peek() != Some(b':') {
                    return Err(self.expected("':' after the object key"));
                }
                self.pos += 1;
                out.push(':');
                self.skip_whitespace();
                self.canonical_value(out)?;
                self.spans.push(MemberSpan {
                    key_start,
                    key_end,
                    value_end: out.len(),
                });
                self.skip_whitespace();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        out.push(',');
                        self.skip_whitespace();
                        if self.peek() == Some(b'}') {
                            return Err(self.trailing_comma("a string key"));
                        }
                    }
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.expected("',' or '}'")),
                }
            }
        }
        let spans = &self.spans[base..];
        let order = {
            let text: &str = out;
            member_order(spans.len(), |i| &text[spans[i].key_start + 1..spans[i].key_end - 1])
        };
        if let Some(order) = order {
            // Rewrite the members in canonical order from a copy.
            let scratch = &mut self.scratch;
            scratch.clear();
            scratch.push_str(&out[body_start..]);
            out.truncate(body_start);
            for (n, &(key_member, value_member)) in order.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                let key = spans[key_member];
                out.push_str(&scratch[key.key_start - body_start..key.key_end - body_start]);
                out.push(':');
                let value = spans[value_member];
                out.push_str(&scratch[value.key_end + 1 - body_start..value.value_end - body_start]);
            }
        }
        self.spans.truncate(base);
        out.push('}');
        self.depth -= 1;
        Ok(())
    }

    #[cold]
    fn trailing_comma(&self, what: &str) -> JsonError {
        self.error_at(self.pos, format!("trailing comma is not allowed, expected {what}"))
    }

    // ----- tree building ---------------------------------------------------

    fn value(&mut self) -> Result<Value, JsonError> {
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => {
                self.pos += 1;
                Ok(Value::String(self.string()?))
            }
            Some(b't') => self.literal("true").map(|()| Value::Bool(true)),
            Some(b'f') => self.literal("false").map(|()| Value::Bool(false)),
            Some(b'n') => self.literal("null").map(|()| Value::Null),
            Some(b'-' | b'0'..=b'9') => {
                let token = self.number()?;
                Ok(Value::Number(self.number_value(&token)?))
            }
            _ => Err(self.expected("a JSON value")),
        }
    }

    /// Parses the rest of a string whose opening quote has been consumed.
    fn string(&mut self) -> Result<JsString, JsonError> {
        let start = self.pos;
        let end = scan_plain(self.bytes, start);
        let run = self.run_str(start, end)?;
        if self.bytes.get(end) == Some(&b'"') {
            // No escapes: the text is its own canonical form.
            self.pos = end + 1;
            return Ok(JsString {
                canonical: run.into(),
                decoded: Decoded::SameAsCanonical,
            });
        }
        self.pos = end;
        let mut canonical = String::with_capacity(run.len() + 16);
        canonical.push_str(run);
        let mut decoded = DecodeState {
            text: String::with_capacity(run.len() + 16),
            lone_surrogates: false,
        };
        decoded.text.push_str(run);
        self.string_body(&mut canonical, Some(&mut decoded))?;
        Ok(JsString::from_parts(canonical, decoded))
    }

    fn array(&mut self) -> Result<Value, JsonError> {
        self.enter_container()?;
        let base = self.values.len();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                let value = self.value()?;
                self.values.push(value);
                self.skip_whitespace();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.skip_whitespace();
                        if self.peek() == Some(b']') {
                            return Err(self.trailing_comma("a JSON value"));
                        }
                    }
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.expected("',' or ']'")),
                }
            }
        }
        self.depth -= 1;
        Ok(Value::Array(self.values.drain(base..).collect()))
    }

    fn object(&mut self) -> Result<Value, JsonError> {
        self.enter_container()?;
        let base = self.members.len();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                if self.peek() != Some(b'"') {
                    return Err(if self.members.len() == base {
                        self.expected("a string key or '}'")
                    } else {
                        self.expected("a string key")
                    });
                }
                self.pos += 1;
                let key = self.string()?;
                self.skip_whitespace();
                if self.peek() != Some(b':') {
                    return Err(self.expected("':' after the object key"));
                }
                self.pos += 1;
                self.skip_whitespace();
                let value = self.value()?;
                self.members.push((key, value));
                self.skip_whitespace();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.skip_whitespace();
                        if self.peek() == Some(b'}') {
                            return Err(self.trailing_comma("a string key"));
                        }
                    }
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.expected("',' or '}'")),
                }
            }
        }
        self.depth -= 1;
        let mut members: Vec<(JsString, Value)> = self.members.drain(base..).collect();
        let order = {
            let view = &members;
            member_order(view.len(), |i| view[i].0.escaped())
        };
        if let Some(order) = order {
            members = reorder(members, &order);
        }
        Ok(Value::Object(Object { members }))
    }
}

/// Returns the index of the first byte at or after `i` that ends a string's
/// unescaped run: `"`, `\` or a control character (or `bytes.len()`).
#[inline]
fn scan_plain(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Eight bytes at a time: a byte's high bit in `hits` is set where the
    // byte is a quote, a backslash or below 0x20. Borrows can only set bits
    // above a true hit, so the lowest set bit is exact.
    while let Some(chunk) = bytes.get(i..i + 8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_le_bytes(chunk);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let hits = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & HIGHS;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

/// Appends `s` with `JSON.stringify`'s escapes, without quotes.
fn escape_str(s: &str, out: &mut String) {
    let bytes = s.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let end = scan_plain(bytes, start);
        // Run boundaries are ASCII bytes, hence char boundaries.
        out.push_str(&s[start..end]);
        if let Some(&b) = bytes.get(end) {
            push_escaped_char(char::from(b), out);
            start = end + 1;
        } else {
            break;
        }
    }
}

/// Appends `ch` as `JSON.stringify` writes it inside a string.
#[inline]
fn push_escaped_char(ch: char, out: &mut String) {
    match ch {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if u32::from(c) < 0x20 => push_unicode_escape(u32::from(c), out),
        c => out.push(c),
    }
}

/// Appends `\u` and four lowercase hex digits.
fn push_unicode_escape(unit: u32, out: &mut String) {
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        out.push(char::from(HEX_DIGITS[((unit >> shift) & 0xF) as usize]));
    }
}

fn push_lone_surrogate(unit: u32, out: &mut String, decoded: Option<&mut DecodeState>) {
    push_unicode_escape(unit, out);
    if let Some(d) = decoded {
        d.text.push(char::REPLACEMENT_CHARACTER);
        d.lone_surrogates = true;
    }
}

fn hex_value(b: u8) -> Option<u32> {
    char::from(b).to_digit(16)
}

/// The four hex digits at `pos`, if there are four.
fn hex4_at(bytes: &[u8], pos: usize) -> Option<u32> {
    let digits = bytes.get(pos..pos + 4)?;
    digits.iter().try_fold(0, |unit, &b| Some(unit << 4 | hex_value(b)?))
}

/// The index a key denotes if it is an array index in the spec's sense: the
/// canonical decimal form of an integer in `0..=4294967294`.
fn array_index(key: &str) -> Option<u32> {
    let bytes = key.as_bytes();
    match bytes {
        [b'0'] => Some(0),
        [b'1'..=b'9', rest @ ..] if rest.len() < 10 && rest.iter().all(u8::is_ascii_digit) => {
            let value = bytes.iter().fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
            u32::try_from(value).ok().filter(|&v| v != u32::MAX)
        }
        _ => None,
    }
}

/// Decides the canonical member order of an object whose `n` members have
/// the keys `key(i)` (canonical escaped form; equal forms mean equal keys).
///
/// Returns `None` when the members are already canonical: no repeated key
/// and array-index keys ascending before all others. Otherwise returns, in
/// output order, for each distinct key the member whose key to write (its
/// first occurrence) and the member whose value to write (its last).
fn member_order<'k>(n: usize, key: impl Fn(usize) -> &'k str) -> Option<Vec<(usize, usize)>> {
    if n < 2 {
        return None;
    }
    let mut in_order = true;
    let mut previous_index: Option<u32> = None;
    let mut seen_other = false;
    for i in 0..n {
        match array_index(key(i)) {
            Some(index) => {
                if seen_other || previous_index.is_some_and(|p| p >= index) {
                    in_order = false;
                    break;
                }
                previous_index = Some(index);
            }
            None => seen_other = true,
        }
    }
    if in_order && !has_duplicate_keys(n, &key) {
        return None;
    }

    // (array index, first member, last member) per distinct key, in order of
    // first occurrence.
    let mut groups: Vec<(Option<u32>, usize, usize)> = Vec::new();
    if n <= LINEAR_SCAN_LIMIT {
        'members: for i in 0..n {
            let k = key(i);
            for group in &mut groups {
                if key(group.1) == k {
                    group.2 = i;
                    continue 'members;
                }
            }
            groups.push((array_index(k), i, i));
        }
    } else {
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(n);
        for i in 0..n {
            let k = key(i);
            match seen.entry(k) {
                Entry::Occupied(e) => groups[*e.get()].2 = i,
                Entry::Vacant(e) => {
                    e.insert(groups.len());
                    groups.push((array_index(k), i, i));
                }
            }
        }
    }
    // Stable: keys that are not array indices keep their order.
    groups.sort_by_key(|&(index, _, _)| match index {
        Some(index) => (false, index),
        None => (true, 0),
    });
    Some(groups.into_iter().map(|(_, first, last)| (first, last)).collect())
}

fn has_duplicate_keys<'k>(n: usize, key: &impl Fn(usize) -> &'k str) -> bool {
    if n <= LINEAR_SCAN_LIMIT {
        (1..n).any(|i| {
            let k = key(i);
            (0..i).any(|j| key(j) == k)
        })
    } else {
        let mut seen = HashSet::with_capacity(n);
        (0..n).any(|i| !seen.insert(key(i)))
    }
}

/// Applies an order from [`member_order`] to parsed members.
fn reorder(members: Vec<(JsString, Value)>, order: &[(usize, usize)]) -> Vec<(JsString, Value)> {
    let mut slots: Vec<Option<(JsString, Value)>> = members.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(order.len());
    for &(key_member, value_member) in order {
        let Some((key, first_value)) = slots[key_member].take() else {
            continue;
        };
        let value = if value_member == key_member {
            first_value
        } else {
            match slots[value_member].take() {
                Some((_, last_value)) => last_value,
                None => first_value,
            }
        };
        out.push((key, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Canonicalizes through both entry points and checks that they agree.
    fn canon(input: &str) -> String {
        let streamed = canonicalize(input.as_bytes()).unwrap();
        let value = parse(input.as_bytes()).unwrap();
        let tree = value.to_canonical_string();
        assert_eq!(streamed, tree, "canonicalize and parse disagree on {input:?}");
        assert!(
            value.canonical_len_bound() >= tree.len(),
            "canonical_len_bound is short for {input:?}"
        );
        streamed
    }

    /// The error both entry points report, checking that they agree.
    fn error(input: &[u8]) -> JsonError {
        let streamed = canonicalize(input).unwrap_err();
        let tree = parse(input).unwrap_err();
        assert_eq!(streamed, tree, "canonicalize and parse disagree on {input:?}");
        streamed
    }

    fn error_text(input: &str) -> String {
        error(input.as_bytes()).to_string()
    }

    fn number(n: f64) -> String {
        let mut out = String::new();
        write_js_number(n, &mut out);
        out
    }

    #[test]
    fn scalars_and_whitespace() {
        assert_eq!(canon("null"), "null");
        assert_eq!(canon("true"), "true");
        assert_eq!(canon("false"), "false");
        assert_eq!(canon(" \t\r\n 1 \n"), "1");
        assert_eq!(canon("\"x\""), "\"x\"");
        assert_eq!(
            canon("{ \"a\" : [ 1 , 2 , { } , [ ] ] ,\n\t\"b\" : null }"),
            r#"{"a":[1,2,{},[]],"b":null}"#
        );
    }

    #[test]
    fn canonical_len_bound_is_exact_but_for_fractions_and_exponents() {
        for input in [
            r#"{"b":"x\n\u00e9","a":[true,false,null,{}],"\ud800":[]}"#,
            r#""\u2028""#,
            "[]",
        ] {
            let value = parse(input.as_bytes()).unwrap();
            assert_eq!(
                value.canonical_len_bound(),
                value.to_canonical_string().len(),
                "{input}"
            );
        }
        // Whole numbers below 10^21 are counted exactly.
        for n in [
            0.0,
            -0.0,
            7.0,
            -10.0,
            99.0,
            100.0,
            4_294_967_295.0,
            -1.234_567_890_123_456_7e20,
            999_999_999_999_999_900_000.0,
        ] {
            assert_eq!(Value::Number(n).canonical_len_bound(), number(n).len(), "{}", number(n));
        }
        // The others are bounded by the longest, which this one is.
        assert_eq!(number(-0.000_001_234_567_890_123_456_7).len(), 25);
        for n in [
            -0.000_001_234_567_890_123_456_7,
            -1.797_693_134_862_315_7e308,
            1e21,
            -0.5,
            f64::NAN,
            f64::INFINITY,
        ] {
            assert!(
                number(n).len() <= Value::Number(n).canonical_len_bound(),
                "{}",
                number(n)
            );
        }
    }

    #[test]
    fn arrays_keep_order() {
        assert_eq!(canon("[3,1,2,\"b\",\"a\"]"), r#"[3,1,2,"b","a"]"#);
        assert_eq!(canon("[[],[[]],{}]"), "[[],[[]],{}]");
    }

    #[test]
    fn duplicate_and_index_keys() {
        assert_eq!(
            canon(r#"{"b":1,"a":2,"10":3,"2":4,"a":5}"#),
            r#"{"2":4,"10":3,"b":1,"a":5}"#
        );
        assert_eq!(canon(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
        assert_eq!(canon(r#"{"a":1,"a":2,"a":3}"#), r#"{"a":3}"#);
        assert_eq!(canon(r#"{"1":1,"0":2,"1":3}"#), r#"{"0":2,"1":3}"#);
        // Equality is by decoded value.
        assert_eq!(canon(r#"{"a":1,"\u0061":2}"#), r#"{"a":2}"#);
        assert_eq!(canon(r#"{"\/":1,"/":2}"#), r#"{"/":2}"#);
        assert_eq!(canon(r#"{"\ud800":1,"\uD800":2}"#), r#"{"\ud800":2}"#);
        assert_eq!(canon(r#"{"\ud800":1,"\ufffd":2}"#), r#"{"\ud800":1,"�":2}"#);
        // An escaped digit is still an index key.
        assert_eq!(canon(r#"{"b":1,"\u0031":2}"#), r#"{"1":2,"b":1}"#);
        // Nested objects are reordered independently.
        assert_eq!(
            canon(r#"{"z":{"y":1,"0":2,"y":3},"1":[{"b":1,"a":2,"b":3}]}"#),
            r#"{"1":[{"b":3,"a":2}],"z":{"0":2,"y":3}}"#
        );
        // Already canonical objects stay as they are.
        assert_eq!(canon(r#"{"0":1,"1":2,"x":3,"a":4}"#), r#"{"0":1,"1":2,"x":3,"a":4}"#);
    }

    #[test]
    fn which_keys_are_array_indices() {
        assert_eq!(
            canon(r#"{"x":0,"4294967294":1,"7":2,"0":3}"#),
            r#"{"0":3,"7":2,"4294967294":1,"x":0}"#
        );
        // Not array indices: they keep insertion order after the indices.
        assert_eq!(
            canon(r#"{"01":1,"-1":2,"1.0":3,"4294967295":4,"":5,"1e3":6," 1":7,"5":8}"#),
            r#"{"5":8,"01":1,"-1":2,"1.0":3,"4294967295":4,"":5,"1e3":6," 1":7}"#
        );
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("4294967294"), Some(4_294_967_294));
        assert_eq!(array_index("4294967295"), None);
        assert_eq!(array_index("99999999999"), None);
        assert_eq!(array_index("00"), None);
        assert_eq!(array_index("+1"), None);
        assert_eq!(array_index(""), None);
    }

    #[test]
    fn large_objects_use_hashing() {
        let mut input = String::from("{");
        let mut expected_tail = String::new();
        for i in 0..100 {
            input.push_str(&format!("\"k{i}\":{i},"));
            if i % 2 == 0 {
                expected_tail.push_str(&format!("\"k{i}\":{},", i + 1000));
            } else {
                expected_tail.push_str(&format!("\"k{i}\":{i},"));
            }
        }
        for i in (0..100).step_by(2) {
            input.push_str(&format!("\"k{i}\":{},", i + 1000));
        }
        input.push_str("\"3\":true}");
        expected_tail.pop();
        assert_eq!(canon(&input), format!("{{\"3\":true,{expected_tail}}}"));

        // Many distinct keys, already canonical.
        let keys: Vec<String> = (0..1000).map(|i| format!("\"x{i}\":{i}")).collect();
        let object = format!("{{{}}}", keys.join(","));
        assert_eq!(canon(&object), object);
    }

    #[test]
    fn numbers() {
        let cases = [
            ("0", "0"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("0e10", "0"),
            ("1.0", "1"),
            ("-1.50", "-1.5"),
            ("1e21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("1E-7", "1e-7"),
            ("1e-7", "1e-7"),
            ("0.000001", "0.000001"),
            ("123e-20", "1.23e-18"),
            ("12345678901234567890", "12345678901234567000"),
            ("123456789012345", "123456789012345"),
            ("-123456789012345", "-123456789012345"),
            ("1234567890123456", "1234567890123456"),
            ("9007199254740993", "9007199254740992"),
            ("5e-324", "5e-324"),
            ("2e-324", "0"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("1e400", "null"),
            ("-1e400", "null"),
            ("1E+2", "100"),
            ("0.1", "0.1"),
            ("100", "100"),
            ("-100", "-100"),
            ("1.5e300", "1.5e+300"),
            ("0.30000000000000004", "0.30000000000000004"),
        ];
        for (input, expected) in cases {
            assert_eq!(canon(input), expected, "input {input}");
            assert_eq!(canon(&format!("[{input}]")), format!("[{expected}]"), "input {input}");
        }
        assert!(parse(b"-0").unwrap().as_f64().unwrap().is_sign_negative());
        assert_eq!(parse(b"1e400").unwrap().as_f64(), Some(f64::INFINITY));
    }

    /// Random inputs from the cross-check against node, with the output that
    /// node v20's `JSON.stringify(JSON.parse(input))` gave.
    #[test]
    fn matches_recorded_node_output() {
        let cases = [
            (
                r##"{"\ud800":"x", "a":-5737614832915157163500150,"0":"a","0" :9734182838.7235453642}"##,
                r##"{"0":9734182838.723545,"\ud800":"x","a":-5.737614832915157e+24}"##,
            ),
            (
                r##"{ " ":"","99":false,"4294967296":1e308,"4294967296":"\/aZabcda"}"##,
                r##"{"99":false," ":"","4294967296":"/aZabcda"}"##,
            ),
            (
                r##"{"__proto__":"\fuD9D1\udeca\uD9A0\udc39'𐀀","950":  false,"__proto__":1041797975956439697274042263424514577076E-115} "##,
                r##"{"950":false,"__proto__":1.0417979759564396e-76}"##,
            ),
            (
                r##"[{"1":{"\u0031":"}\u0001","event":1.7976931348623157e308}},""]"##,
                r##"[{"1":{"1":"}\u0001","event":1.7976931348623157e+308}},""]"##,
            ),
            (
                r##"{"1":20473530827083459.9816779203e+2}"##,
                r##"{"1":2047353082708346000}"##,
            ),
            (
                r##""Z\u0005a\u349D{abcdefghijk\u0009[\uDF40\u00060/xhello\uDE5B\raqq'\u000F""##,
                r##""Z\u0005a㒝{abcdefghijk\t[\udf40\u00060/xhello\ude5b\raqq'\u000f""##,
            ),
            (
                r##""hello0\",\uD9AC\",}\/'0abcdefghijklm\u0009[9/\u0010\bqq" "##,
                r##""hello0\",\ud9ac\",}/'0abcdefghijklm\t[9/\u0010\bqq""##,
            ),
            (
                r##""\u99f8:\uD580\ud9e3abcdefghijkl""##,
                r##""駸:햀\ud9e3abcdefghijkl""##,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(canon(input), expected, "input {input}");
        }
    }

    #[test]
    fn write_js_number_matches_javascript() {
        assert_eq!(number(f64::NAN), "null");
        assert_eq!(number(f64::INFINITY), "null");
        assert_eq!(number(f64::NEG_INFINITY), "null");
        assert_eq!(number(-0.0), "0");
        assert_eq!(number(1.0), "1");
        assert_eq!(number(-2.5), "-2.5");
        assert_eq!(number(1e21), "1e+21");
        assert_eq!(number(1e-7), "1e-7");
        assert_eq!(number(123_456_789.0), "123456789");
    }

    #[test]
    fn string_escapes() {
        assert_eq!(canon(r#""a\"b\\c""#), r#""a\"b\\c""#);
        assert_eq!(canon(r#""\/ and /""#), r#""/ and /""#);
        assert_eq!(canon(r#""\b\f\n\r\t""#), r#""\b\f\n\r\t""#);
        assert_eq!(canon(r#""\u0008\u000C\u000a\u000D\u0009""#), r#""\b\f\n\r\t""#);
        assert_eq!(canon(r#""\u0000""#), r#""\u0000""#);
        assert_eq!(canon(r#""\u001F\u001f\u007f""#), "\"\\u001f\\u001f\u{7f}\"");
        assert_eq!(canon(r#""\u0041\u00e9\u00E9""#), r#""Aéé""#);
        assert_eq!(canon(r#""\u2028\u2029""#), "\"\u{2028}\u{2029}\"");
        assert_eq!(canon("\"\u{2028}\""), "\"\u{2028}\"");
        assert_eq!(canon("\"\u{7f}é😀\""), "\"\u{7f}é😀\"");
        assert_eq!(canon(r#""\ud83d\ude00""#), "\"😀\"");
        assert_eq!(canon(r#""\uD83D\uDE00x""#), "\"😀x\"");
    }

    #[test]
    fn every_control_character() {
        for c in 0u32..0x20 {
            let expected = match c {
                0x08 => "\\b".to_string(),
                0x09 => "\\t".to_string(),
                0x0A => "\\n".to_string(),
                0x0C => "\\f".to_string(),
                0x0D => "\\r".to_string(),
                _ => format!("\\u{c:04x}"),
            };
            let input = format!("\"\\u{c:04X}\"");
            assert_eq!(canon(&input), format!("\"{expected}\""));
            let ch = char::from_u32(c).unwrap();
            let mut out = String::new();
            write_js_string(&ch.to_string(), &mut out);
            assert_eq!(out, format!("\"{expected}\""));
            // Raw control characters are errors.
            let raw = format!("\"a{ch}\"");
            let err = error(raw.as_bytes());
            assert_eq!((err.line, err.column), (1, 3), "control {c}");
            assert_eq!(err.message, format!("unescaped control character 0x{c:02x} in string"));
        }
    }

    #[test]
    fn lone_surrogates() {
        assert_eq!(canon(r#""\ud800""#), r#""\ud800""#);
        assert_eq!(canon(r#""\uDBFF""#), r#""\udbff""#);
        assert_eq!(canon(r#""\udc00x""#), r#""\udc00x""#);
        assert_eq!(canon(r#""\udc00\ud800""#), r#""\udc00\ud800""#);
        assert_eq!(canon(r#""\ud800\u0041""#), r#""\ud800A""#);
        assert_eq!(canon(r#""\ud800\ud800\udc00""#), "\"\\ud800𐀀\"");
        assert_eq!(canon(r#""\ud83d\ude00\ude00""#), "\"😀\\ude00\"");
        assert_eq!(canon(r#""\ud800\n""#), r#""\ud800\n""#);

        let value = parse(br#"["\ud800x","ok"]"#).unwrap();
        let items = value.as_array().unwrap();
        assert_eq!(items[0].as_str(), None);
        let s = items[0].as_js_string().unwrap();
        assert!(!s.is_well_formed());
        assert_eq!(s.as_str_lossy(), "\u{fffd}x");
        assert_eq!(s.escaped(), "\\ud800x");
        assert_eq!(items[1].as_str(), Some("ok"));
    }

    #[test]
    fn write_js_string_escapes() {
        let mut out = String::new();
        write_js_string("a\"b\\c/\u{1}\u{1f}\u{7f}\u{2028}é😀\0", &mut out);
        assert_eq!(out, "\"a\\\"b\\\\c/\\u0001\\u001f\u{7f}\u{2028}é😀\\u0000\"");
        let mut long = String::new();
        write_js_string("0123456789abcdef\"0123456789", &mut long);
        assert_eq!(long, "\"0123456789abcdef\\\"0123456789\"");
    }

    #[test]
    fn long_strings_take_the_fast_path_correctly() {
        for len in 0..40 {
            let body: String = "x".repeat(len);
            for special in ["\\\"", "\\\\", "\\n", "é", "😀"] {
                let input = format!("\"{body}{special}{body}\"");
                assert_eq!(canon(&input), input);
            }
        }
    }

    #[test]
    fn value_accessors() {
        let value = parse(br#"{"b":"x\ty","a":[1,true,null],"n":-2.5,"1":{"k":"v"},"b":"last"}"#).unwrap();
        assert_eq!(value.get("b").and_then(Value::as_str), Some("last"));
        assert_eq!(value.get("n").and_then(Value::as_f64), Some(-2.5));
        assert!(value.get("a").unwrap().as_array().unwrap()[2].is_null());
        assert_eq!(value.get("a").unwrap().as_array().unwrap()[1].as_bool(), Some(true));
        assert_eq!(
            value.get("1").and_then(|v| v.get("k")).and_then(Value::as_str),
            Some("v")
        );
        assert_eq!(value.get("missing"), None);
        assert_eq!(value.get("a").unwrap().get("0"), None);
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str().unwrap())
            .collect();
        assert_eq!(keys, ["1", "b", "a", "n"]);
        assert_eq!(value.as_object().unwrap().len(), 4);
        assert_eq!(
            value.to_string(),
            r#"{"1":{"k":"v"},"b":"last","a":[1,true,null],"n":-2.5}"#
        );

        let escaped = parse(br#""tab\there \"q\" \u00e9""#).unwrap();
        assert_eq!(escaped.as_str(), Some("tab\there \"q\" é"));
        assert_eq!(escaped.as_js_string().unwrap().escaped(), "tab\\there \\\"q\\\" é");
        let key = JsString::from("a\"b");
        assert_eq!(key.escaped(), "a\\\"b");
        assert_eq!(key, "a\"b");
        assert_eq!(key, JsString::from("a\"b"));
    }

    #[test]
    fn canonicalize_into_appends_and_restores() {
        let mut out = String::from("prefix:");
        canonicalize_into(b"{\"a\":1.0}", &mut out).unwrap();
        assert_eq!(out, "prefix:{\"a\":1}");
        assert!(canonicalize_into(b"{\"a\":1,}", &mut out).is_err());
        assert_eq!(out, "prefix:{\"a\":1}");
    }

    #[test]
    fn depth_limit() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(canon(&ok), ok);
        let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let err = error(too_deep.as_bytes());
        assert_eq!(err.column, MAX_DEPTH + 1);
        assert_eq!(err.message, "nesting deeper than 128 levels is not allowed");
        let objects = "{\"a\":".repeat(MAX_DEPTH + 1) + "1" + &"}".repeat(MAX_DEPTH + 1);
        assert!(error(objects.as_bytes()).message.starts_with("nesting deeper"));
        // Hostile input fails quickly instead of overflowing the stack.
        let hostile = "[".repeat(1_000_000);
        assert!(error(hostile.as_bytes()).message.starts_with("nesting deeper"));
        // Values as deep as allowed, joined, parse back: the joining array
        // does not count.
        let joined = format!("{ok},{ok}");
        assert_eq!(parse_joined(&joined).unwrap().as_array().unwrap().len(), 2);
        assert!(parse_joined(&format!("{ok},{too_deep}")).is_err());
    }

    #[test]
    fn syntax_errors_say_what_and_where() {
        assert_eq!(error_text(r#"{"a":}"#), "expected a JSON value at line 1 column 6");
        assert_eq!(
            error_text("[1,]"),
            "trailing comma is not allowed, expected a JSON value at line 1 column 4"
        );
        assert_eq!(
            error_text(r#"{"a":1,}"#),
            "trailing comma is not allowed, expected a string key at line 1 column 8"
        );
        assert_eq!(
            error_text("01"),
            "leading zeros are not allowed in numbers at line 1 column 2"
        );
        assert_eq!(
            error_text("-01"),
            "leading zeros are not allowed in numbers at line 1 column 3"
        );
        assert_eq!(
            error_text("\"a\tb\""),
            "unescaped control character 0x09 in string at line 1 column 3"
        );
        assert_eq!(
            error_text("{} x"),
            "expected end of input after the JSON value at line 1 column 4"
        );
        assert_eq!(
            error_text("{\n  \"a\": 1,\n  \"b\": 2 x\n}"),
            "expected ',' or '}' at line 3 column 10"
        );
        assert_eq!(error_text("[1 2]"), "expected ',' or ']' at line 1 column 4");
        assert_eq!(
            error_text("{\"a\" 1}"),
            "expected ':' after the object key at line 1 column 6"
        );
        assert_eq!(error_text("{1:2}"), "expected a string key or '}' at line 1 column 2");
        assert_eq!(error_text("{\"a\":1,2}"), "expected a string key at line 1 column 8");
        assert_eq!(
            error_text(""),
            "unexpected end of input, expected a JSON value at line 1 column 1"
        );
        assert_eq!(
            error_text("  "),
            "unexpected end of input, expected a JSON value at line 1 column 3"
        );
        assert_eq!(
            error_text("[1"),
            "unexpected end of input, expected ',' or ']' at line 1 column 3"
        );
        assert_eq!(
            error_text("\"abc"),
            "unexpected end of input, expected '\"' to close the string at line 1 column 5"
        );
        assert_eq!(
            error_text("tru"),
            "unexpected end of input, expected 'true' at line 1 column 4"
        );
        assert_eq!(error_text("nulL"), "expected 'null' at line 1 column 4");
        assert_eq!(
            error_text("-"),
            "unexpected end of input, expected a digit after '-' at line 1 column 2"
        );
        assert_eq!(
            error_text("1."),
            "unexpected end of input, expected a digit after the decimal point at line 1 column 3"
        );
        assert_eq!(
            error_text("1.e5"),
            "expected a digit after the decimal point at line 1 column 3"
        );
        assert_eq!(
            error_text("1e+"),
            "unexpected end of input, expected a digit in the exponent at line 1 column 4"
        );
        assert_eq!(error_text(".5"), "expected a JSON value at line 1 column 1");
        assert_eq!(error_text("+1"), "expected a JSON value at line 1 column 1");
        assert_eq!(error_text("NaN"), "expected a JSON value at line 1 column 1");
        assert_eq!(error_text("Infinity"), "expected a JSON value at line 1 column 1");
        assert_eq!(
            error_text(r#""\x""#),
            "invalid escape sequence, expected one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u at line 1 column 2"
        );
        assert_eq!(
            error_text(r#""\u12G4""#),
            "expected 4 hex digits after '\\u' at line 1 column 6"
        );
        assert_eq!(
            error_text(r#""\'""#).split(" at ").next(),
            Some("invalid escape sequence, expected one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u")
        );
        assert_eq!(
            error_text("[1] // c"),
            "expected end of input after the JSON value at line 1 column 5"
        );
        assert_eq!(error_text("/* c */ 1"), "expected a JSON value at line 1 column 1");
        assert_eq!(error_text("'a'"), "expected a JSON value at line 1 column 1");
        // Only space, tab, LF and CR are whitespace.
        assert_eq!(error_text("\u{a0}1"), "expected a JSON value at line 1 column 1");
        assert_eq!(error_text("\u{feff}1"), "expected a JSON value at line 1 column 1");
        assert_eq!(
            error_text("1\u{c}"),
            "expected end of input after the JSON value at line 1 column 2"
        );
        // Columns count characters, not bytes.
        assert_eq!(error_text("[\"é😀\" x]"), "expected ',' or ']' at line 1 column 7");
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let err = error(b"\"ab\xffc\"");
        assert_eq!((err.line, err.column, err.offset), (1, 4, 3));
        assert_eq!(err.message, "invalid UTF-8 byte sequence in string");
        // Truncated sequence before the closing quote, and an encoded surrogate.
        assert!(error(b"\"\xe2\x82\"").message.contains("UTF-8"));
        assert!(error(b"\"\xed\xa0\x80\"").message.contains("UTF-8"));
        assert!(error(b"\"\xc0\xaf\"").message.contains("UTF-8"));
        // In a key, after a long ASCII run, and outside strings.
        assert!(error(b"{\"k\xff\":1}").message.contains("UTF-8"));
        assert!(error(b"\"0123456789abcdef\x80\"").message.contains("UTF-8"));
        assert_eq!(error(b"[\xff]").message, "expected a JSON value");
    }

    #[test]
    fn error_display() {
        let err = error(b"[1,\n  2,\n  3 4]");
        assert_eq!(err.line, 3);
        assert_eq!(err.column, 5);
        assert_eq!(err.offset, 13);
        assert_eq!(err.to_string(), "expected ',' or ']' at line 3 column 5");
    }
}
