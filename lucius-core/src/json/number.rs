//! Canonical JSON numbers: one spelling per value, and a refusal, naming the number's JSON
//! pointer, for a number that a payload cannot hold exactly.
//!
//! A payload holds a number as `serde_json` does (its `arbitrary_precision` feature is off):
//! a 64-bit integer from `-2^63` to `2^64 - 1`, or a 64-bit float. The canonical spelling of
//! a number, the one stored, handed to workers and hashed, is:
//! - `0` for zero, whatever its sign or spelling (`-0`, `0.0`, `0e7`);
//! - the integer, for an integral value in that range however it is written (`1.0`, `1e0`
//!   and `10e-1` are `1`);
//! - otherwise the shortest decimal that reads back as the value's float, as `serde_json`
//!   writes floats (`0.1`, `1.5e-7`, `1e+20`).
//!
//! A number whose canonical spelling has another value than the one written is refused:
//! storing it would round it (`18446744073709551616` would become `1.8446744073709552e+19`,
//! `0.10000000000000001` would become `0.1`, `1e-400` would become `0`) or fail (`1e400`).

use std::borrow::Cow;

use serde_json::{Number, Value};

/// A number in a body that cannot be held exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InexactNumber {
    /// JSON pointer to the number in the body.
    pub(crate) pointer: String,
    /// What was written and why it cannot be held.
    pub(crate) message: String,
}

/// The body with every number respelled so that `serde_json` reads it as its canonical value
/// (borrowed when none needs it), or the numbers that cannot be held exactly (at most
/// `limit` of them).
///
/// Zero and integral values become integers (`serde_json` would read `1.0` as a float, and
/// `9007199254740993.0` as the float `9007199254740992`). Other accepted numbers are left as
/// written: they are exactly their float's shortest spelling, which `serde_json` reads back
/// exactly (its `float_roundtrip` is on) and writes canonically.
///
/// Only a JSON body is refused for its numbers: a body that is not JSON is returned as it
/// is, for the parser to refuse. A rewritten body is JSON exactly when the body is.
pub(crate) fn canonical_body(
    body: &[u8],
    limit: usize,
) -> Result<Cow<'_, [u8]>, Vec<InexactNumber>> {
    let mut rewritten: Option<Vec<u8>> = None;
    // `body[..copied]` is in `rewritten` already.
    let mut copied = 0;
    let mut refused: Vec<(usize, usize, String)> = Vec::new();
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => i = string_end(body, i),
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < body.len()
                    && matches!(body[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let token = &body[start..i];
                if plain_integer(token) || plain_fraction(token) {
                    continue;
                }
                // The token's bytes are ASCII.
                let Ok(text) = std::str::from_utf8(token) else {
                    continue;
                };
                match canonical_literal(text) {
                    Literal::Keep | Literal::NotANumber => {}
                    Literal::Respelled(canonical) => {
                        let out = rewritten.get_or_insert_with(|| Vec::with_capacity(body.len()));
                        out.extend_from_slice(&body[copied..start]);
                        out.extend_from_slice(canonical.as_bytes());
                        copied = i;
                    }
                    Literal::Inexact(message) => refused.push((start, i, message)),
                }
            }
            _ => i += 1,
        }
    }
    if !refused.is_empty() {
        return refuse(body, refused, limit);
    }
    Ok(match rewritten {
        None => Cow::Borrowed(body),
        Some(mut out) => {
            out.extend_from_slice(&body[copied..]);
            Cow::Owned(out)
        }
    })
}

/// The canonical form of a number a [`Value`] holds, when it is not canonical already (an
/// `f64` that is zero or an integer in the 64-bit range). A `Value`'s float is taken as
/// exact: there is no text left to refuse.
pub(crate) fn canonical_number(n: &Number) -> Option<Number> {
    if !n.is_f64() {
        return None;
    }
    let canonical = canonical_f64(n.as_f64()?);
    (canonical != *n).then_some(canonical)
}

/// Rewrites every number `value` holds into its canonical form (see [`canonical_number`]).
pub(crate) fn canonicalize(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(c) = canonical_number(n) {
                *n = c;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(canonicalize),
        Value::Object(m) => m.values_mut().for_each(canonicalize),
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}

/// The canonical form of a finite float.
fn canonical_f64(f: f64) -> Number {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    const TWO_64: f64 = 18_446_744_073_709_551_616.0;
    if f == 0.0 {
        return Number::from(0u64);
    }
    if f.fract() == 0.0 {
        // Integral and in range, so the conversions are exact.
        if (0.0..TWO_64).contains(&f) {
            return Number::from(f as u64);
        }
        if (-TWO_63..0.0).contains(&f) {
            return Number::from(f as i64);
        }
    }
    Number::from_f64(f).unwrap_or_else(|| Number::from(0u64))
}

/// What a number token is.
#[derive(Debug, PartialEq, Eq)]
enum Literal {
    /// It is read as its canonical value as written.
    Keep,
    /// Its canonical spelling (an integer), which has exactly its value.
    Respelled(String),
    /// It cannot be held exactly: why.
    Inexact(String),
    /// Not a JSON number: the parser refuses the body.
    NotANumber,
}

/// `-?[1-9][0-9]{0,17}` or `0`: canonical already (18 digits always fit an `i64`).
fn plain_integer(token: &[u8]) -> bool {
    let digits = token.strip_prefix(b"-").unwrap_or(token);
    match digits {
        [b'0'] => token.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.len() <= 17 && rest.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// `-?(0|[1-9][0-9]*)\.[0-9]+` with a fraction that is not zero, at most 15 significant
/// digits, at most 24 bytes: read as written (see [`canonical_text`]), and checked here
/// without building a [`Decimal`], as most fractions in payloads are.
fn plain_fraction(token: &[u8]) -> bool {
    if token.len() > 24 {
        return false;
    }
    let unsigned = token.strip_prefix(b"-").unwrap_or(token);
    let Some(dot) = unsigned.iter().position(|&b| b == b'.') else {
        return false;
    };
    let (int, frac) = (&unsigned[..dot], &unsigned[dot + 1..]);
    let grammar = !int.is_empty()
        && !frac.is_empty()
        && (int[0] != b'0' || int.len() == 1)
        && int.iter().chain(frac).all(u8::is_ascii_digit);
    if !grammar || frac.iter().all(|&d| d == b'0') {
        return false;
    }
    let digits = || int.iter().chain(frac);
    let first = digits().position(|&d| d != b'0');
    // Counted from the end.
    let last = digits().rev().position(|&d| d != b'0');
    matches!((first, last), (Some(f), Some(l)) if int.len() + frac.len() - l - f <= 15)
}

fn canonical_literal(text: &str) -> Literal {
    let Some(value) = Decimal::parse(text) else {
        return Literal::NotANumber;
    };
    match canonical_text(&value, text) {
        Ok(None) => Literal::Keep,
        Ok(Some(c)) if c == text => Literal::Keep,
        Ok(Some(c)) => Literal::Respelled(c),
        Err(why) => Literal::Inexact(why),
    }
}

/// The largest and the smallest positive magnitudes a float holds.
const LARGEST: &str = "1.7976931348623157e308";
const SMALLEST: &str = "5e-324";

/// The integer spelling of `value` (written as `text`) if it is zero or integral and in the
/// 64-bit range; `None` if it is exactly the shortest spelling of its float (then `text`
/// reads as that float); or why it cannot be held.
fn canonical_text(value: &Decimal, text: &str) -> Result<Option<String>, String> {
    if value.digits.is_empty() {
        return Ok(Some("0".to_owned()));
    }
    let len = i64::try_from(value.digits.len()).unwrap_or(i64::MAX);
    if value.exponent >= 0 && len + value.exponent <= 20 {
        // At most 20 digits: fits a u128.
        let mut magnitude = value
            .digits
            .iter()
            .fold(0u128, |m, d| m * 10 + u128::from(d - b'0'));
        for _ in 0..value.exponent {
            magnitude *= 10;
        }
        if !value.negative && magnitude <= u128::from(u64::MAX) {
            return Ok(Some(magnitude.to_string()));
        }
        if value.negative && magnitude <= 1 << 63 {
            return Ok(Some(format!("-{magnitude}")));
        }
    }
    // The value lies in [10^order, 10^(order + 1)).
    let order = len.saturating_add(value.exponent) - 1;
    // A fraction of at most 15 significant digits among the normal floats is the shortest
    // spelling of its nearest float: two such decimals never share a float (15 digits
    // survive a round trip through a float), so the shortest, no longer than it, is it.
    if value.exponent < 0 && len <= 15 && (-307..=307).contains(&order) {
        return Ok(None);
    }
    let shown = abbreviate(text);
    let too_large =
        || format!("{shown} is larger than the largest number a payload holds ({LARGEST})");
    let too_small = || {
        format!(
            "{shown} is not zero but smaller than the smallest number a payload holds \
             ({SMALLEST}): it would be stored as 0"
        )
    };
    if order > 308 {
        return Err(too_large());
    }
    if order < -325 {
        return Err(too_small());
    }
    // `text` is a JSON number, which Rust's float syntax includes; the parse is correctly
    // rounded.
    let f: f64 = text
        .parse()
        .map_err(|_| format!("{shown} is not a number"))?;
    if f.is_infinite() {
        return Err(too_large());
    }
    if f == 0.0 {
        return Err(too_small());
    }
    let canonical = canonical_f64(f).to_string();
    if Decimal::parse(&canonical).as_ref() == Some(value) {
        // Not an integer in range (that was spelled above), so `canonical` is the float's.
        return Ok(None);
    }
    Err(format!(
        "{shown} cannot be held exactly: a payload holds integers from -9223372036854775808 \
         to 18446744073709551615 and other numbers as 64-bit floats, and the nearest float \
         is {canonical} (send that value, or the number as a string)"
    ))
}

/// A long literal, cut for a message.
fn abbreviate(text: &str) -> Cow<'_, str> {
    const MAX: usize = 40;
    if text.len() <= MAX {
        Cow::Borrowed(text)
    } else {
        // ASCII: any byte index is a character boundary.
        Cow::Owned(format!("{}…", &text[..MAX]))
    }
}

/// The exact value of a JSON number: `digits × 10^exponent`.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    /// ASCII digits without leading or trailing zeros; empty for zero (never negative).
    digits: Vec<u8>,
    exponent: i64,
}

impl Decimal {
    /// A number in JSON's grammar, `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn parse(text: &str) -> Option<Decimal> {
        fn digits(s: &[u8]) -> usize {
            s.iter().take_while(|c| c.is_ascii_digit()).count()
        }
        let s = text.as_bytes();
        let (negative, s) = match s.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, s),
        };
        let n = digits(s);
        if n == 0 || (s[0] == b'0' && n > 1) {
            return None;
        }
        let (int, mut s) = s.split_at(n);
        let mut frac: &[u8] = &[];
        if let Some((b'.', rest)) = s.split_first() {
            let n = digits(rest);
            if n == 0 {
                return None;
            }
            (frac, s) = rest.split_at(n);
        }
        let mut exponent: i64 = 0;
        if let Some((b'e' | b'E', rest)) = s.split_first() {
            let (negative_exponent, rest) = match rest.split_first() {
                Some((b'-', r)) => (true, r),
                Some((b'+', r)) => (false, r),
                _ => (false, rest),
            };
            if rest.is_empty() || digits(rest) != rest.len() {
                return None;
            }
            // Saturated far beyond any float's range, where the value is refused anyway.
            let e = rest.iter().fold(0i64, |e, d| {
                (e * 10 + i64::from(d - b'0')).min(1_000_000_000_000_000)
            });
            exponent = if negative_exponent { -e } else { e };
            s = &[];
        }
        if !s.is_empty() {
            return None;
        }
        let mut all: Vec<u8> = int.iter().chain(frac).copied().collect();
        exponent -= i64::try_from(frac.len()).ok()?;
        let leading = all.iter().take_while(|&&d| d == b'0').count();
        all.drain(..leading);
        let trailing = all.iter().rev().take_while(|&&d| d == b'0').count();
        all.truncate(all.len() - trailing);
        exponent += i64::try_from(trailing).ok()?;
        if all.is_empty() {
            return Some(Decimal {
                negative: false,
                digits: all,
                exponent: 0,
            });
        }
        Some(Decimal {
            negative,
            digits: all,
            exponent,
        })
    }
}

/// The index just past the string literal that opens at `start`.
fn string_end(body: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < body.len() {
        match body[i..].iter().position(|&b| b == b'"' || b == b'\\') {
            None => break,
            Some(at) if body[i + at] == b'\\' => i += at + 2,
            Some(at) => return i + at + 1,
        }
    }
    body.len()
}

/// The refusal of `refused` (start, end, message), if the body is otherwise JSON.
fn refuse(
    body: &[u8],
    refused: Vec<(usize, usize, String)>,
    limit: usize,
) -> Result<Cow<'_, [u8]>, Vec<InexactNumber>> {
    // With each refused number replaced by a `0`, the body must parse: else it is not JSON
    // and the parser says so.
    let mut patched = body.to_vec();
    for &(start, end, _) in &refused {
        patched[start] = b'0';
        patched[start + 1..end].fill(b' ');
    }
    if serde_json::from_slice::<Value>(&patched).is_err() {
        return Ok(Cow::Borrowed(body));
    }
    let refused = &refused[..refused.len().min(limit)];
    let starts: Vec<usize> = refused.iter().map(|r| r.0).collect();
    Err(pointers_at(body, &starts)
        .into_iter()
        .zip(refused)
        .map(|(pointer, (_, _, message))| InexactNumber {
            pointer,
            message: message.clone(),
        })
        .collect())
}

/// The JSON pointer of the value that starts at each of `offsets` (ascending) in `body`, a
/// JSON text.
fn pointers_at(body: &[u8], offsets: &[usize]) -> Vec<String> {
    enum Frame {
        /// An object: the literal of the key being read or last read, and whether the next
        /// string is a key.
        Object {
            key: Option<(usize, usize)>,
            expect_key: bool,
        },
        /// An array: the index of the element being read.
        Array(usize),
    }
    let render = |stack: &[Frame]| {
        let mut pointer = String::new();
        for frame in stack {
            match frame {
                Frame::Object {
                    key: Some((start, end)),
                    ..
                } => {
                    let key: String = serde_json::from_slice(&body[*start..*end])
                        .unwrap_or_else(|_| String::from_utf8_lossy(&body[*start..*end]).into());
                    pointer.push('/');
                    pointer.push_str(&crate::validation::escape_pointer(&key));
                }
                Frame::Object { key: None, .. } => {}
                Frame::Array(index) => {
                    pointer.push('/');
                    pointer.push_str(&index.to_string());
                }
            }
        }
        pointer
    };
    let mut stack = Vec::new();
    let mut out = Vec::with_capacity(offsets.len());
    let mut targets = offsets.iter().peekable();
    let mut i = 0;
    while let Some(&&target) = targets.peek() {
        if i >= target || i >= body.len() {
            out.push(render(&stack));
            targets.next();
            continue;
        }
        match body[i] {
            b'"' => {
                let end = string_end(body, i);
                if let Some(Frame::Object { key, expect_key }) = stack.last_mut() {
                    if *expect_key {
                        *key = Some((i, end));
                        *expect_key = false;
                    }
                }
                i = end;
                continue;
            }
            b'{' => stack.push(Frame::Object {
                key: None,
                expect_key: true,
            }),
            b'[' => stack.push(Frame::Array(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array(index)) => *index += 1,
                Some(Frame::Object { expect_key, .. }) => *expect_key = true,
                None => {}
            },
            _ => {}
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The text a payload holding `text` stores: the literal as respelled, read by
    /// `serde_json` and written back.
    fn canonical(text: &str) -> Result<String, String> {
        let read = match canonical_literal(text) {
            Literal::Keep => text.to_owned(),
            Literal::Respelled(c) => c,
            Literal::Inexact(why) => return Err(why),
            Literal::NotANumber => return Err("not a number".to_owned()),
        };
        let value: Value = serde_json::from_str(&read).map_err(|e| e.to_string())?;
        Ok(value.to_string())
    }

    #[test]
    fn equal_values_have_one_spelling() {
        for (written, expected) in [
            ("1", "1"),
            ("1.0", "1"),
            ("1e0", "1"),
            ("10e-1", "1"),
            ("100E-2", "1"),
            ("0.01e2", "1"),
            ("-0", "0"),
            ("0", "0"),
            ("-0.0e5", "0"),
            ("0e-999999999999999999999", "0"),
            ("1e3", "1000"),
            ("-1.5", "-1.5"),
            ("1.50", "1.5"),
            ("0.1", "0.1"),
            ("1.5e-7", "1.5e-7"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("100000000000000000000", "1e+20"),
            ("1E20", "1e+20"),
            ("1e+20", "1e+20"),
            ("9007199254740993", "9007199254740993"),
            ("9007199254740993.0", "9007199254740993"),
            ("18446744073709551615", "18446744073709551615"),
            ("1.8446744073709551615e19", "18446744073709551615"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("-922337203685477580.8e1", "-9223372036854775808"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("5e-324", "5e-324"),
        ] {
            assert_eq!(canonical(written).as_deref(), Ok(expected), "{written}");
        }
    }

    #[test]
    fn numbers_that_would_be_rounded_are_refused() {
        for (written, why) in [
            (
                "18446744073709551616",
                "nearest float is 1.8446744073709552e+19",
            ),
            (
                "123456789012345678901234567890",
                "nearest float is 1.2345678901234568e+29",
            ),
            (
                "-9223372036854775809",
                "nearest float is -9223372036854775808",
            ),
            ("1.0000000000000001", "nearest float is 1 "),
            ("0.10000000000000001", "nearest float is 0.1 "),
            ("9007199254740993.5", "nearest float is 9007199254740994"),
            ("1e400", "larger than the largest"),
            ("-1.8e308", "larger than the largest"),
            ("1e99999999999999999999", "larger than the largest"),
            ("1e-400", "would be stored as 0"),
            ("2e-324", "would be stored as 0"),
            ("3e-324", "nearest float is 5e-324"),
        ] {
            let e = canonical(written).unwrap_err();
            assert!(e.contains(why), "{written}: {e}");
            assert!(e.starts_with(written), "{written}: {e}");
        }
        let long = "1".repeat(100);
        let e = canonical(&long).unwrap_err();
        assert!(e.starts_with(&format!("{}…", "1".repeat(40))), "{e}");
    }

    #[test]
    fn the_fraction_shortcut_takes_only_plain_fractions() {
        for kept in [
            "0.5",
            "-0.5",
            "123.45",
            "0.000123",
            "99999999999999.9",
            "1.50",
        ] {
            assert!(plain_fraction(kept.as_bytes()), "{kept}");
        }
        for other in [
            "1.0",
            "-0.00",
            "1e5",
            "1.5e3",
            "01.5",
            ".5",
            "1.",
            "9999999999999999.9",
            "0.1234567890123456",
            "0.00000000000000000000001",
            "1.5.5",
        ] {
            assert!(!plain_fraction(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn only_json_numbers_are_read() {
        for bad in [
            "01", "-", "1.", ".5", "1e", "1e+", "+1", "1.5.2", "1-2", "--1",
        ] {
            assert_eq!(canonical_literal(bad), Literal::NotANumber, "{bad}");
        }
    }

    #[test]
    fn a_body_is_respelled_outside_its_strings_only() {
        let body = br#"{"a":1.0,"b\"1.0":"x\\",  "c":[1e2,"1.0",-0,0.5,12],"d":10e-1}"#;
        let out = canonical_body(body, 50).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"a":1,"b\"1.0":"x\\",  "c":[100,"1.0",0,0.5,12],"d":1}"#
        );
        let plain = br#"{"a":1,"b":[0.5,-3,"1.0"]}"#;
        assert!(matches!(canonical_body(plain, 50), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn refusals_name_their_pointers() {
        let body = br#"{"payload": {"a/b": [1, {"x~": 18446744073709551616}], "n": 1e400},
            "steps": {"ocr": {"dpi": 123456789012345678901234567890}}, "k": 1e-400}"#;
        let e = canonical_body(body, 50).unwrap_err();
        let pointers: Vec<&str> = e.iter().map(|r| r.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            ["/payload/a~1b/1/x~0", "/payload/n", "/steps/ocr/dpi", "/k"]
        );
        assert!(e[0].message.starts_with("18446744073709551616 "), "{e:?}");
        assert_eq!(canonical_body(body, 2).unwrap_err().len(), 2);
        // A top-level number.
        let e = canonical_body(b" 1e400 ", 50).unwrap_err();
        assert_eq!(e[0].pointer, "");
    }

    #[test]
    fn a_body_that_is_not_json_is_left_to_the_parser() {
        for body in [
            &br#"{"a": 1e400"#[..],
            br#"{"a": 1e400} x"#,
            br#"{"a": 1.0,}"#,
            br#"{"a": 01.0}"#,
        ] {
            let out = canonical_body(body, 50).unwrap();
            assert_eq!(
                serde_json::from_slice::<Value>(&out).is_err(),
                serde_json::from_slice::<Value>(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let nested = format!("{}1e400{}", "[".repeat(200), "]".repeat(200));
        assert!(canonical_body(nested.as_bytes(), 50).is_ok());
    }

    #[test]
    fn values_are_canonical_by_the_same_rule() {
        let mut v = serde_json::json!({"a": [1.0, -0.0, 0.5, 1e20, 18446744073709551616.0,
                                             -9223372036854775808.0, 3, -4], "b": {"c": 2e3}});
        canonicalize(&mut v);
        assert_eq!(
            v.to_string(),
            r#"{"a":[1,0,0.5,1e+20,1.8446744073709552e+19,-9223372036854775808,3,-4],"b":{"c":2000}}"#
        );
    }

    /// The parser this crate uses reads every canonical spelling back to the same float
    /// (`serde_json`'s `float_roundtrip`, which `jsonschema` turns on): without it, a stored
    /// float could come back one unit off.
    #[test]
    fn serde_json_reads_floats_exactly() {
        let hard = "2.2250738585072011e-308";
        let f: f64 = serde_json::from_str(hard).unwrap();
        assert_eq!(f, hard.parse::<f64>().unwrap());
    }

    proptest! {
        /// Any float's canonical spelling is accepted as is and reads back to the same
        /// value; other spellings of that value are respelled to it.
        #[test]
        fn every_float_has_one_accepted_spelling(bits in any::<u64>(), zeros in 0usize..4) {
            let f = f64::from_bits(bits);
            prop_assume!(f.is_finite() && f != 0.0);
            let c = canonical_f64(f).to_string();
            prop_assert_eq!(canonical(&c), Ok(c.clone()));
            let back: Value = serde_json::from_str(&c).unwrap();
            prop_assert_eq!(back.as_f64(), Some(f));
            let d = Decimal::parse(&c).unwrap();
            let digits = std::str::from_utf8(&d.digits).unwrap();
            let sign = if d.negative { "-" } else { "" };
            let len = i64::try_from(digits.len()).unwrap();
            // 0.D × 10^(E + len) and D000 × 10^(E - 3): the same value.
            let fraction = format!("{sign}0.{digits}{}e{}", "0".repeat(zeros), d.exponent + len);
            let padded = format!("{sign}{digits}{}E{}", "0".repeat(zeros), d.exponent - zeros as i64);
            prop_assert_eq!(canonical(&fraction), Ok(c.clone()));
            prop_assert_eq!(canonical(&padded), Ok(c));
        }

        /// The rule itself: what is accepted is stored with exactly the value sent, and
        /// whatever is refused could not be (or has more than 15 digits or lies at the
        /// edges of the float range, where some spellings cannot be).
        #[test]
        fn what_is_accepted_is_stored_exactly(
            digits in "[1-9][0-9]{0,24}",
            point in 0usize..26,
            exponent in -340i64..340,
            negative in any::<bool>(),
        ) {
            let (int, frac) = digits.split_at(point.min(digits.len()));
            let literal = format!(
                "{}{}{}{frac}e{exponent}",
                if negative { "-" } else { "" },
                if int.is_empty() { "0" } else { int },
                if frac.is_empty() { "" } else { "." },
            );
            let sent = Decimal::parse(&literal).unwrap();
            match canonical(&literal) {
                Ok(stored) => prop_assert_eq!(Decimal::parse(&stored), Some(sent), "{}", literal),
                Err(_) => {
                    let order = i64::try_from(sent.digits.len()).unwrap() + sent.exponent - 1;
                    prop_assert!(
                        sent.digits.len() > 15 || !(-307..=307).contains(&order),
                        "{} refused", literal
                    );
                }
            }
        }

        /// The shortcut for plain fractions decides as the full rule.
        #[test]
        fn plain_fractions_are_kept(token in "-?(0|[1-9][0-9]{0,12})\\.[0-9]{1,14}") {
            if plain_fraction(token.as_bytes()) {
                prop_assert_eq!(canonical_literal(&token), Literal::Keep, "{}", token);
            }
        }

        /// Integers in the 64-bit range keep their digits, however written.
        #[test]
        fn every_64_bit_integer_is_exact(n in any::<i64>(), m in any::<u64>(), shift in 0u32..4) {
            prop_assert_eq!(canonical(&n.to_string()), Ok(n.to_string()));
            prop_assert_eq!(canonical(&format!("{n}.000")), Ok(n.to_string()));
            prop_assert_eq!(canonical(&format!("{m}e0")), Ok(m.to_string()));
            let q = m / 10u64.pow(shift);
            prop_assert_eq!(canonical(&format!("{}e-{shift}", u128::from(q) * 10u128.pow(shift))), Ok(q.to_string()));
        }
    }
}
