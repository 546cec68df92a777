//! Element values as pydicom converts them (pydicom 3, default settings), or a `Decline`.

use std::borrow::Cow;

use crate::Decline;

/// One value of an element, as the JSON and the element rows need it. Its text is borrowed
/// from the header's bytes where they are that text (ASCII, UTF-8), else decoded into a copy.
pub enum Item<'a> {
    /// Text; for DS and IS the text as pydicom keeps it (``str(value)``).
    Text(Cow<'a, str>),
    /// A DS value: its text and number; an empty DS value in a list is `Text("")`.
    Decimal(Cow<'a, str>, f64),
    /// An IS value: its text and number.
    Integer(Cow<'a, str>, i64),
    Int(i128),
    Float(f64),
    /// An attribute tag (AT).
    Tag(u32),
    /// A person name: its text and its components (alphabetic, ideographic, phonetic).
    Name(String, Vec<String>),
}

pub enum Decoded<'a> {
    Values(Vec<Item<'a>>),
    /// A binary VR: its bytes are the value.
    Binary,
}

pub const BINARY_VRS: [&[u8; 2]; 7] = [b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"UN"];

/// Whether a VR named by its text is one of `BINARY_VRS`.
pub fn is_binary(vr: &str) -> bool {
    BINARY_VRS.iter().any(|b| b.as_slice() == vr.as_bytes())
}
/// VRs whose text is decoded with the dataset's character set.
const CHARSET_VRS: [&[u8; 2]; 7] = [b"LO", b"LT", b"PN", b"SH", b"ST", b"UC", b"UT"];

#[derive(Clone, Copy, PartialEq)]
pub enum Charset {
    Latin1,
    Utf8,
}

/// Python's str.strip() whitespace for the characters a header holds.
fn is_py_space(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' | '\x1c'..='\x1f' | '\u{85}' | '\u{a0}'
    ) || (c > '\u{a0}' && c.is_whitespace())
}

pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

fn rstrip_pad(s: &str) -> &str {
    s.trim_end_matches([' ', '\0'])
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

fn decode<'a>(bytes: &'a [u8], vr: &[u8; 2], charset: Charset) -> Result<Cow<'a, str>, Decline> {
    if bytes.is_ascii() {
        if bytes.contains(&0x1b) {
            return Err(Decline::new("escape sequence in text"));
        }
        // ASCII is UTF-8
        return Ok(Cow::Borrowed(std::str::from_utf8(bytes).unwrap()));
    }
    if CHARSET_VRS.contains(&vr) && charset == Charset::Utf8 {
        return std::str::from_utf8(bytes)
            .map(Cow::Borrowed)
            .map_err(|_| Decline::new("invalid UTF-8"));
    }
    Ok(Cow::Owned(latin1(bytes)))
}

/// `part`, a slice of `whole`, borrowed as `whole` is, else copied (as is a `part` that lies
/// outside a borrowed `whole`: never a wrong slice of it).
fn part_of<'a>(whole: &Cow<'a, str>, part: &str) -> Cow<'a, str> {
    if let Cow::Borrowed(w) = whole {
        let at = (part.as_ptr() as usize).wrapping_sub(w.as_ptr() as usize);
        if let Some(inside) = w.get(at..at.saturating_add(part.len())) {
            if inside.as_ptr() == part.as_ptr() {
                return Cow::Borrowed(inside);
            }
        }
    }
    Cow::Owned(part.to_string())
}

/// The values `parts` (slices of `text`) as text items.
fn texts<'a, 's>(text: &'s Cow<'a, str>, parts: impl Iterator<Item = &'s str>) -> Vec<Item<'a>> {
    parts.map(|v| Item::Text(part_of(text, v))).collect()
}

fn is_decimal(text: &str) -> bool {
    // [+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?
    let b = text.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac;
    }
    if digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp {
            return false;
        }
    }
    i == b.len()
}

/// A DS or IS value without its surrounding spaces; other whitespace (tabs, \x1c-\x1f, ...)
/// around a number is left to pydicom, which does not read it as that number.
fn number_text<'a>(item: &'a str, reason: &'static str) -> Result<&'a str, Decline> {
    let text = py_strip(item);
    if item.trim_matches(' ') != text {
        return Err(Decline::new(reason));
    }
    Ok(text)
}

/// A DS value, `item` a slice of `whole`.
fn decimal<'a>(whole: &Cow<'a, str>, item: &str) -> Result<Item<'a>, Decline> {
    let text = number_text(item, "DS value with whitespace other than spaces")?;
    if text.is_empty() {
        return Ok(Item::Text(Cow::Borrowed("")));
    }
    if !is_decimal(text) || text.len() > 32 {
        return Err(Decline::new("DS value"));
    }
    let number: f64 = text.parse().map_err(|_| Decline::new("DS value"))?;
    if !number.is_finite() {
        return Err(Decline::new("DS value"));
    }
    Ok(Item::Decimal(part_of(whole, text), number))
}

/// An IS value, `item` a slice of `whole`.
fn integer<'a>(whole: &Cow<'a, str>, item: &str) -> Result<Item<'a>, Decline> {
    let text = number_text(item, "IS value with whitespace other than spaces")?;
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Decline::new("IS value"));
    }
    let number: i64 = text.parse().map_err(|_| Decline::new("IS value"))?;
    if !(-(1 << 31)..(1 << 31)).contains(&number) {
        return Err(Decline::new("IS value out of range")); // text, by `is_number_string`
    }
    Ok(Item::Integer(part_of(whole, text), number))
}

fn name(item: &str) -> Result<Item<'static>, Decline> {
    let mut components: Vec<String> = item.split('=').map(str::to_string).collect();
    while components.last().is_some_and(|c| c.is_empty()) {
        components.pop();
    }
    if components.is_empty() {
        return Err(Decline::new("PN value without components"));
    }
    // str(PersonName): its components joined, without the empty ones it ends with
    Ok(Item::Name(components.join("="), components))
}

fn numbers(bytes: &[u8], vr: &[u8; 2], little: bool) -> Result<Vec<Item<'static>>, Decline> {
    let width = match vr {
        b"US" | b"SS" => 2,
        b"UL" | b"SL" | b"FL" => 4,
        _ => 8,
    };
    if !bytes.len().is_multiple_of(width) {
        return Err(Decline::new("binary number length"));
    }
    Ok(bytes
        .chunks_exact(width)
        .map(|raw| {
            let mut b = [0u8; 8];
            b[..width].copy_from_slice(raw);
            if !little {
                b[..width].reverse(); // now little endian
            }
            let c = &b[..width];
            match vr {
                b"US" => Item::Int(u16::from_le_bytes([c[0], c[1]]) as i128),
                b"SS" => Item::Int(i16::from_le_bytes([c[0], c[1]]) as i128),
                b"UL" => Item::Int(u32::from_le_bytes(c.try_into().unwrap()) as i128),
                b"SL" => Item::Int(i32::from_le_bytes(c.try_into().unwrap()) as i128),
                b"UV" => Item::Int(u64::from_le_bytes(c.try_into().unwrap()) as i128),
                b"SV" => Item::Int(i64::from_le_bytes(c.try_into().unwrap()) as i128),
                b"FL" => Item::Float(f32::from_le_bytes(c.try_into().unwrap()) as f64),
                _ => Item::Float(f64::from_le_bytes(c.try_into().unwrap())),
            }
        })
        .collect())
}

/// The values of one element, as `values_of(elem.value)` holds them after pydicom's
/// conversion.
pub fn decode_value<'a>(
    bytes: &'a [u8],
    vr: &[u8; 2],
    charset: Charset,
    little: bool,
) -> Result<Decoded<'a>, Decline> {
    if BINARY_VRS.contains(&vr) {
        if vr == b"UN" {
            return Err(Decline::new("UN element"));
        }
        return Ok(Decoded::Binary);
    }
    if bytes.is_empty() {
        return Ok(Decoded::Values(Vec::new()));
    }
    let items = match vr {
        b"US" | b"SS" | b"UL" | b"SL" | b"FL" | b"FD" | b"UV" | b"SV" => {
            numbers(bytes, vr, little)?
        }
        b"AE" => {
            let text = decode(bytes, vr, charset)?;
            texts(&text, text.split('\\').map(py_strip))
        }
        b"AS" | b"CS" | b"DA" | b"DT" | b"TM" | b"UI" => {
            let text = decode(bytes, vr, charset)?;
            let items = rstrip_pad(&text).split('\\');
            if vr == b"UI" && items.clone().any(|v| py_strip(v) != v) {
                return Err(Decline::new("UI value with spaces"));
            }
            texts(&text, items)
        }
        b"UR" => {
            let text = decode(bytes, vr, charset)?;
            texts(&text, std::iter::once(text.trim_end_matches(is_py_space)))
        }
        b"SH" | b"LO" | b"UC" => {
            let text = decode(bytes, vr, charset)?;
            texts(&text, text.split('\\').map(rstrip_pad))
        }
        b"ST" | b"LT" | b"UT" => {
            let text = decode(bytes, vr, charset)?;
            texts(&text, std::iter::once(rstrip_pad(&text)))
        }
        b"DS" => {
            let text = decode(bytes, vr, charset)?;
            let stripped = rstrip_pad(py_strip(&text));
            if stripped.is_empty() {
                return Err(Decline::new("DS of padding"));
            }
            stripped
                .split('\\')
                .map(|part| decimal(&text, part))
                .collect::<Result<_, _>>()?
        }
        b"IS" => {
            let text = decode(bytes, vr, charset)?;
            let stripped = rstrip_pad(&text);
            if stripped.is_empty() {
                return Err(Decline::new("IS of padding"));
            }
            stripped
                .split('\\')
                .map(|part| integer(&text, part))
                .collect::<Result<_, _>>()?
        }
        b"AT" => {
            if !bytes.len().is_multiple_of(4) {
                return Err(Decline::new("AT length"));
            }
            bytes
                .chunks_exact(4)
                .map(|c| {
                    let half = |a: u8, b: u8| {
                        if little {
                            u16::from_le_bytes([a, b])
                        } else {
                            u16::from_be_bytes([a, b])
                        }
                    };
                    Item::Tag((half(c[0], c[1]) as u32) << 16 | half(c[2], c[3]) as u32)
                })
                .collect()
        }
        b"PN" => {
            let trimmed = &bytes[..bytes.len()
                - bytes
                    .iter()
                    .rev()
                    .take_while(|&&b| b == 0 || b == b' ')
                    .count()];
            let text = decode(trimmed, vr, charset)?;
            if text.is_empty() {
                return Ok(Decoded::Values(Vec::new()));
            }
            text.split('\\').map(name).collect::<Result<_, _>>()?
        }
        _ => return Err(Decline::new("VR not handled")),
    };
    // A value that pads to nothing reads as empty, as pydicom's "" does
    if items.len() == 1 {
        if let Item::Text(t) = &items[0] {
            if t.is_empty() {
                return Ok(Decoded::Values(Vec::new()));
            }
        }
    }
    Ok(Decoded::Values(items))
}

/// VRs whose values are text (`values.TEXT_VRS`).
const TEXT_VRS: [&[u8; 2]; 14] = [
    b"AE", b"AS", b"CS", b"DA", b"DT", b"LO", b"LT", b"SH", b"ST", b"TM", b"UC", b"UI", b"UR",
    b"UT",
];

/// Decoded values without the spaces that pad them (PS3.5 6.2), as `values.significant`
/// drops them for the JSON and the rows: after each value of a text VR (NULs too, which pydicom
/// leaves only after an AE), before it too in AE, CS, LO and SH, and around each component of
/// a person name.
pub fn significant<'a>(vr: &[u8; 2], items: Vec<Item<'a>>) -> Result<Vec<Item<'a>>, Decline> {
    let before = matches!(vr, b"AE" | b"CS" | b"LO" | b"SH");
    if vr != b"PN" && !TEXT_VRS.contains(&vr) {
        return Ok(items);
    }
    items
        .into_iter()
        .map(|item| match item {
            Item::Text(t) => Ok(Item::Text(trimmed(t, before))),
            Item::Name(text, components) => {
                let mut groups: Vec<String> = components.into_iter().map(name_group).collect();
                while groups.last().is_some_and(|g| g.is_empty()) {
                    groups.pop();
                }
                if groups.is_empty() {
                    return Err(Decline::new("PN value of spaces"));
                }
                let joined = groups.iter().map(String::len).sum::<usize>() + groups.len() - 1;
                let text = if joined == text.len() {
                    text
                } else {
                    groups.join("=")
                };
                Ok(Item::Name(text, groups))
            }
            other => Ok(other),
        })
        .collect()
}

/// A person name's component group without the spaces around each of its components
/// (PS3.5 6.2.1 holds them insignificant: "Doe ^ Jane" is "Doe^Jane").
fn name_group(group: String) -> String {
    if !group.contains(' ') {
        return group;
    }
    let parts: Vec<&str> = group.split('^').map(|c| c.trim_matches(' ')).collect();
    parts.join("^")
}

/// ``t`` without the spaces and NULs after it (and the spaces before it, if ``before``); ``t``
/// itself, not a copy, when it has none: most values have none.
fn trimmed(t: Cow<'_, str>, before: bool) -> Cow<'_, str> {
    let kept = rstrip_pad(&t);
    let kept = if before {
        kept.trim_start_matches(' ')
    } else {
        kept
    };
    if kept.len() == t.len() {
        t
    } else {
        part_of(&t, kept)
    }
}

/// Formatted text in a buffer on the stack: `py_float`'s digits, without allocating.
struct Digits {
    buf: [u8; 32],
    len: usize,
}

impl Digits {
    fn new() -> Self {
        Digits {
            buf: [0; 32],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for Digits {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// ``repr(float)`` of Python, written to `out`: shortest round-trip digits, exponent outside
/// 1e-4..1e16.
pub fn py_float(out: &mut String, x: f64) {
    use std::fmt::Write;
    if x.is_nan() {
        return out.push_str("nan");
    }
    if x.is_infinite() {
        return out.push_str(if x > 0.0 { "inf" } else { "-inf" });
    }
    if x == 0.0 {
        return out.push_str(if x.is_sign_negative() { "-0.0" } else { "0.0" });
    }
    let mut sci = Digits::new();
    let _ = write!(sci, "{:e}", x.abs());
    if sci.as_str().split_once('e').unwrap().0.len() > 17 {
        // 17 digits: more than one string reads back; Python writes the nearest (ties even)
        sci = Digits::new();
        let _ = write!(sci, "{:.16e}", x.abs());
    }
    let (mantissa, exp) = sci.as_str().split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    let mut digits = Digits::new();
    for part in mantissa.split('.') {
        let _ = digits.write_str(part);
    }
    let digits = digits.as_str();
    let decpt = exp + 1;
    let n = digits.len() as i32;
    if x < 0.0 {
        out.push('-');
    }
    let zeros = |out: &mut String, count: i32| out.extend((0..count).map(|_| '0'));
    if decpt <= -4 || decpt > 16 {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = decpt - 1;
        let _ = write!(out, "e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        zeros(out, -decpt);
        out.push_str(digits);
    } else if decpt >= n {
        out.push_str(digits);
        zeros(out, decpt - n);
        out.push_str(".0");
    } else {
        out.push_str(&digits[..decpt as usize]);
        out.push('.');
        out.push_str(&digits[decpt as usize..]);
    }
}
