//! The outputs of one header: DICOM JSON as `dicomjson.header_json` writes it, and the
//! element rows of `elements.element_rows` as Arrow buffers.

use std::fmt::Write;

use crate::parse::PIXEL_TAGS;
use crate::values::{py_float, Decoded, Item, BINARY_VRS};
use crate::{Decline, Out, OutValue, Run};

const BULK_THRESHOLD: usize = 1024;
const SHORT_BINARY: usize = 64;
const NUMBER_VRS: [&[u8; 2]; 10] = [
    b"DS", b"IS", b"FL", b"FD", b"SL", b"SS", b"SV", b"UL", b"US", b"UV",
];
/// `dicomjson._PLAIN_VRS`: values written as they are (numbers as numbers).
const PLAIN_VRS: [&[u8; 2]; 24] = [
    b"AE", b"AS", b"CS", b"DA", b"DT", b"LO", b"LT", b"SH", b"ST", b"TM", b"UC", b"UI", b"UR",
    b"UT", b"DS", b"IS", b"FL", b"FD", b"SL", b"SS", b"SV", b"UL", b"US", b"UV",
];

fn vr_str(vr: &[u8; 2]) -> &str {
    std::str::from_utf8(vr).unwrap_or("??")
}

/// A JSON string as Python's json.dumps (ensure_ascii) writes it.
fn json_str(out: &mut String, s: &str) {
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
            c if (c as u32) < 0x20 || (c as u32) > 0x7F => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{:04x}", unit);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Bytes per word of the binary VRs whose byte order follows the dataset's.
fn word_bytes(vr: &[u8; 2]) -> Option<usize> {
    match vr {
        b"OW" => Some(2),
        b"OL" | b"OF" => Some(4),
        b"OD" | b"OV" => Some(8),
        _ => None,
    }
}

/// Big endian words as little endian; a trailing partial word is kept as it is.
fn swapped(data: &[u8], width: usize) -> Vec<u8> {
    let mut out = data.to_vec();
    for word in out.chunks_exact_mut(width) {
        word.reverse();
    }
    out
}

/// `str(value)` of one converted value.
fn item_text(item: &Item) -> String {
    match item {
        Item::Text(t) | Item::Decimal(t, _) | Item::Integer(t, _) | Item::Name(t, _) => t.clone(),
        Item::Int(n) => n.to_string(),
        Item::Float(f) => py_float(*f),
        Item::Tag(t) => format!("({:04X},{:04X})", t >> 16, t & 0xFFFF),
    }
}

fn json_number(out: &mut String, item: &Item) {
    match item {
        Item::Integer(_, n) => {
            let _ = write!(out, "{n}");
        }
        Item::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Item::Decimal(_, f) => out.push_str(&py_float(*f)),
        Item::Float(f) if f.is_finite() => out.push_str(&py_float(*f)),
        Item::Float(f) => json_str(out, &py_float(*f)),
        Item::Text(t) | Item::Name(t, _) => json_str(out, t),
        Item::Tag(_) => json_str(out, "?"), // AT is no number VR: not reached
    }
}

pub fn json(run: &Run, elements: &[Out]) -> Result<String, Decline> {
    let mut out = String::with_capacity(run.data.len() * 2);
    json_dataset(run, elements, &mut out)?;
    Ok(out)
}

fn json_dataset(run: &Run, elements: &[Out], out: &mut String) -> Result<(), Decline> {
    out.push('{');
    for (i, e) in elements.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{:08X}\":{{\"vr\":", e.tag);
        json_str(out, vr_str(&e.vr));
        json_value(run, e, out)?;
        out.push('}');
    }
    out.push('}');
    Ok(())
}

fn json_value(run: &Run, e: &Out, out: &mut String) -> Result<(), Decline> {
    let binary = BINARY_VRS.contains(&&e.vr);
    match &e.value {
        OutValue::Items(items) => {
            out.push_str(",\"Value\":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_dataset(run, item, out)?;
            }
            out.push(']');
        }
        _ if PIXEL_TAGS.contains(&e.tag) => out.push_str(",\"BulkDataURI\":\"dicomlake:bulk\""),
        OutValue::Raw(s, t) if binary && t - s > BULK_THRESHOLD => {
            out.push_str(",\"BulkDataURI\":\"dicomlake:bulk\"")
        }
        OutValue::Empty => {}
        OutValue::Strings(values) => {
            out.push_str(",\"Value\":[");
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_str(out, v);
            }
            out.push(']');
        }
        OutValue::Raw(s, t) => match run.decoded(&e.vr, *s, *t)? {
            Decoded::Binary(data) => {
                if !data.is_empty() {
                    out.push_str(",\"InlineBinary\":\"");
                    match word_bytes(&e.vr) {
                        // InlineBinary is little endian (PS3.18 F.2.7), as dcm2json writes it
                        Some(width) if !run.little => out.push_str(&base64(&swapped(data, width))),
                        _ => out.push_str(&base64(data)),
                    }
                    out.push('"');
                }
            }
            Decoded::Values(items) if items.is_empty() => {}
            Decoded::Values(items) => {
                out.push_str(",\"Value\":[");
                let number = NUMBER_VRS.contains(&&e.vr);
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    match item {
                        Item::Name(_, components) => {
                            if components.len() > 3 {
                                return Err(Decline::new("PN with more than 3 components"));
                            }
                            out.push('{');
                            let keys = ["Alphabetic", "Ideographic", "Phonetic"];
                            for (k, c) in keys.iter().zip(components) {
                                if !out.ends_with('{') {
                                    out.push(',');
                                }
                                let _ = write!(out, "\"{k}\":");
                                json_str(out, c);
                            }
                            out.push('}');
                        }
                        Item::Tag(t) => {
                            let _ = write!(out, "\"{t:08X}\"");
                        }
                        _ if number => json_number(out, item),
                        Item::Text(t) if PLAIN_VRS.contains(&&e.vr) => json_str(out, t),
                        _ => return Err(Decline::new("value not written as JSON")),
                    }
                }
                out.push(']');
            }
        },
    }
    Ok(())
}

/// A nullable string column as Arrow buffers.
#[derive(Default)]
struct Strings {
    offsets: Vec<i32>,
    data: Vec<u8>,
    valid: Vec<bool>,
}

impl Strings {
    fn push(&mut self, value: Option<&str>) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        if let Some(v) = value {
            self.data.extend_from_slice(v.as_bytes());
        }
        self.valid.push(value.is_some());
        self.offsets.push(self.data.len() as i32);
    }
}

/// The element rows, column by column (`ELEMENT_SCHEMA`).
#[derive(Default)]
pub struct Rows {
    tag: Strings,
    keyword: Strings,
    vr: Strings,
    path: Strings,
    depth: Vec<i16>,
    creator: Strings,
    text: Strings,
    number: Vec<Option<f64>>,
    count: Vec<i32>,
}

fn bitmap(valid: &[bool]) -> Option<Vec<u8>> {
    if valid.iter().all(|v| *v) {
        return None;
    }
    let mut out = vec![0u8; valid.len().div_ceil(8)];
    for (i, v) in valid.iter().enumerate() {
        if *v {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    Some(out)
}

fn le<T: Copy, const N: usize>(values: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|v| f(*v)).collect()
}

impl Rows {
    pub fn len(&self) -> usize {
        self.depth.len()
    }

    /// Per column, its validity bitmap (None: no nulls), then its offsets and data (strings)
    /// or values: 9 columns, 25 buffers.
    pub fn into_buffers(self) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        let strings = |s: Strings, out: &mut Vec<Option<Vec<u8>>>| {
            let mut offsets = s.offsets;
            if offsets.is_empty() {
                offsets.push(0);
            }
            out.push(bitmap(&s.valid));
            out.push(Some(le(&offsets, i32::to_le_bytes)));
            out.push(Some(s.data));
        };
        strings(self.tag, &mut out);
        strings(self.keyword, &mut out);
        strings(self.vr, &mut out);
        strings(self.path, &mut out);
        out.push(None);
        out.push(Some(le(&self.depth, i16::to_le_bytes)));
        strings(self.creator, &mut out);
        strings(self.text, &mut out);
        let valid: Vec<bool> = self.number.iter().map(Option::is_some).collect();
        out.push(bitmap(&valid));
        out.push(Some(le(&self.number, |n: Option<f64>| {
            n.unwrap_or(0.0).to_le_bytes()
        })));
        out.push(None);
        out.push(Some(le(&self.count, i32::to_le_bytes)));
        out
    }
}

pub fn rows(run: &Run, elements: &[Out]) -> Result<Rows, Decline> {
    let mut rows = Rows::default();
    add_rows(run, elements, "", 0, &mut rows)?;
    Ok(rows)
}

/// `str(creator.value)` of the private creator of `tag` among `elements` (the output's).
fn creator(run: &Run, elements: &[Out], tag: u32) -> Result<Option<String>, Decline> {
    let (group, element) = (tag >> 16, tag & 0xFFFF);
    if group % 2 == 0 || element < 0x1000 {
        return Ok(None);
    }
    let creator_tag = (group << 16) | (element >> 8);
    let Ok(i) = elements.binary_search_by_key(&creator_tag, |o| o.tag) else {
        return Ok(None);
    };
    let c = &elements[i];
    let items = match &c.value {
        OutValue::Raw(s, t) => match run.decoded(&c.vr, *s, *t)? {
            Decoded::Values(items) => items,
            Decoded::Binary(_) => return Err(Decline::new("binary private creator")),
        },
        OutValue::Empty => Vec::new(),
        _ => return Err(Decline::new("private creator changed")),
    };
    match items.as_slice() {
        [] => Ok(Some(String::new())),
        [Item::Text(t)] => Ok(Some(t.clone())),
        _ => Err(Decline::new("private creator value")),
    }
}

fn add_rows(
    run: &Run,
    elements: &[Out],
    parent: &str,
    depth: i16,
    rows: &mut Rows,
) -> Result<(), Decline> {
    for e in elements {
        if depth == 0 && PIXEL_TAGS.contains(&e.tag) {
            continue;
        }
        let tag = format!("{:08X}", e.tag);
        let path = if parent.is_empty() {
            tag.clone()
        } else {
            format!("{parent}.{tag}")
        };
        rows.tag.push(Some(&tag));
        rows.keyword.push(run.core.keyword(e.tag));
        rows.vr.push(Some(vr_str(&e.vr)));
        rows.path.push(Some(&path));
        rows.depth.push(depth);
        rows.creator.push(creator(run, elements, e.tag)?.as_deref());
        let binary = BINARY_VRS.contains(&&e.vr);
        let numeric = NUMBER_VRS.contains(&&e.vr);
        match &e.value {
            OutValue::Items(items) => {
                rows.text.push(None);
                rows.number.push(None);
                rows.count.push(items.len() as i32);
                for (i, item) in items.iter().enumerate() {
                    add_rows(run, item, &format!("{path}[{i}]"), depth + 1, rows)?;
                }
            }
            OutValue::Empty => {
                rows.text.push(None);
                rows.number.push(None);
                rows.count.push(0);
            }
            OutValue::Strings(values) => {
                rows.text.push(Some(&values.join("\\")));
                rows.number.push(None);
                rows.count.push(values.len() as i32);
                if numeric {
                    return Err(Decline::new("new text in a number VR"));
                }
            }
            OutValue::Raw(s, t) if binary => {
                let data = run.bytes(*s, *t);
                let hex = (!data.is_empty() && data.len() <= SHORT_BINARY).then(|| {
                    data.iter().fold(String::new(), |mut h, b| {
                        let _ = write!(h, "{b:02x}");
                        h
                    })
                });
                rows.text.push(hex.as_deref());
                rows.number.push(None);
                rows.count.push(if data.is_empty() { 0 } else { 1 });
            }
            OutValue::Raw(s, t) => {
                let Decoded::Values(items) = run.decoded(&e.vr, *s, *t)? else {
                    return Err(Decline::new("bytes of a text VR"));
                };
                if items.is_empty() {
                    rows.text.push(None);
                } else {
                    let texts: Vec<String> = items.iter().map(item_text).collect();
                    rows.text.push(Some(&texts.join("\\")));
                }
                let number = match items.first() {
                    Some(Item::Decimal(_, f) | Item::Float(f)) if numeric => Some(*f),
                    Some(Item::Integer(_, n)) if numeric => Some(*n as f64),
                    Some(Item::Int(n)) if numeric => Some(*n as f64),
                    _ => None,
                };
                rows.number.push(number);
                rows.count.push(items.len() as i32);
            }
        }
    }
    Ok(())
}
