//! The outputs of one header: DICOM JSON as `dicomjson.header_json` writes it, and the
//! element rows of `elements.element_rows` as Arrow buffers.

use std::fmt::Write;

use crate::parse::PIXEL_TAGS;
use crate::values::{py_float, significant, Decoded, Item, BINARY_VRS};
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

/// A JSON string as Python's json.dumps (ensure_ascii) writes it: only space to "~" as they
/// are, DEL (0x7F) escaped too.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    // Most text has nothing to escape: written at once
    if s.bytes()
        .all(|b| (0x20..=0x7E).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7E => {
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

/// `str(value)` of one converted value, written to `out`.
fn item_text(out: &mut String, item: &Item) {
    match item {
        Item::Text(t) | Item::Decimal(t, _) | Item::Integer(t, _) => out.push_str(t),
        Item::Name(t, _) => out.push_str(t),
        Item::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Item::Float(f) => py_float(out, *f),
        Item::Tag(t) => {
            // pydicom's str of a tag: dcmdump's form in upper case, as PS3.6 writes tags
            let _ = write!(out, "({:04X},{:04X})", t >> 16, t & 0xFFFF);
        }
    }
}

/// A DS or IS value longer than PS3.5 allows is written as its text, as `dicomjson._numbers`
/// writes it; an integer DS as its digits exactly (16 are more than a double holds).
fn json_number(out: &mut String, item: &Item) {
    match item {
        Item::Integer(t, _) | Item::Decimal(t, _) if t.len() > most_bytes(item) => json_str(out, t),
        Item::Integer(_, n) => {
            let _ = write!(out, "{n}");
        }
        Item::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Item::Decimal(t, f) => match t.parse::<i64>() {
            Ok(n) => {
                let _ = write!(out, "{n}");
            }
            Err(_) => py_float(out, *f),
        },
        Item::Float(f) if f.is_finite() => py_float(out, *f),
        Item::Float(f) => {
            let mut text = String::new();
            py_float(&mut text, *f);
            json_str(out, &text)
        }
        Item::Text(t) if t.is_empty() => out.push_str("null"), // an empty value among several
        Item::Text(t) => json_str(out, t),
        Item::Name(t, _) => json_str(out, t),
        Item::Tag(_) => json_str(out, "?"), // AT is no number VR: not reached
    }
}

/// The most bytes a DS (16) or IS (12) value holds (PS3.5 Table 6.2-1).
fn most_bytes(item: &Item) -> usize {
    if matches!(item, Item::Integer(..)) {
        12
    } else {
        16
    }
}

/// The DICOM JSON and the element rows of the output header, in one walk over it: each
/// value is converted once for both.
pub fn emit(run: &Run, elements: &[Out]) -> Result<(String, Rows), Decline> {
    // Sized from the elements: growing the buffers value by value was much of a header's time
    let (count, bytes) = extent(elements);
    let mut json = String::with_capacity(48 * count + 2 * bytes);
    let mut rows = Rows::with_capacity(count, bytes);
    let mut path = String::new();
    emit_dataset(run, elements, &mut path, 0, &mut json, &mut rows)?;
    Ok((json, rows))
}

/// How many elements (rows) `elements` hold, nested ones too, and about how many bytes of
/// text their values write (a binary value past `BULK_THRESHOLD` writes none).
fn extent(elements: &[Out]) -> (usize, usize) {
    let (mut count, mut bytes) = (elements.len(), 0);
    for e in elements {
        match &e.value {
            OutValue::Raw(s, t) => bytes += (t - s).min(2 * BULK_THRESHOLD),
            OutValue::Strings(values) => bytes += values.iter().map(|v| v.len() + 1).sum::<usize>(),
            OutValue::Empty => {}
            OutValue::Items(items) => {
                for item in items {
                    let (c, b) = extent(item);
                    count += c;
                    bytes += b;
                }
            }
        }
    }
    (count, bytes)
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";
const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";

/// `{tag:08X}`, without the formatting machinery (three times an element: 10% of a header):
/// made once, written where each needs it.
fn hex_tag(tag: u32) -> [u8; 8] {
    let mut out = [0; 8];
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = UPPER_HEX[(tag >> (28 - 4 * i)) as usize & 0xF];
    }
    out
}

/// Each byte as `{b:02x}`.
fn hex_bytes(out: &mut String, data: &[u8]) {
    out.reserve(2 * data.len());
    for b in data {
        out.push(LOWER_HEX[(b >> 4) as usize] as char);
        out.push(LOWER_HEX[(b & 0xF) as usize] as char);
    }
}

fn emit_dataset(
    run: &Run,
    elements: &[Out],
    path: &mut String,
    depth: i16,
    json: &mut String,
    rows: &mut Rows,
) -> Result<(), Decline> {
    json.push('{');
    let parent = path.len();
    for (i, e) in elements.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        let hex = hex_tag(e.tag);
        let hex = std::str::from_utf8(&hex).unwrap_or_default();
        json.push('"');
        json.push_str(hex);
        json.push_str("\":{\"vr\":");
        json_str(json, vr_str(&e.vr));
        // Top-level pixel data has no row
        let row = !(depth == 0 && PIXEL_TAGS.contains(&e.tag));
        if row {
            if parent > 0 {
                path.push('.');
            }
            path.push_str(hex);
            rows.tag.push(Some(hex));
            rows.keyword.push(run.core.keyword(e.tag));
            rows.vr.push(Some(vr_str(&e.vr)));
            rows.path.push(Some(path));
            rows.depth.push(depth);
            rows.creator.push(creator(run, elements, e.tag)?.as_deref());
        }
        emit_value(run, e, path, depth, row, json, rows)?;
        path.truncate(parent);
        json.push('}');
    }
    json.push('}');
    Ok(())
}

/// One element's value: its JSON after ``"vr":"..."``, and (when ``row``) the rest of its row.
fn emit_value(
    run: &Run,
    e: &Out,
    path: &mut String,
    depth: i16,
    row: bool,
    json: &mut String,
    rows: &mut Rows,
) -> Result<(), Decline> {
    let binary = BINARY_VRS.contains(&&e.vr);
    let numeric = NUMBER_VRS.contains(&&e.vr);
    let bulk = PIXEL_TAGS.contains(&e.tag);
    let text_row = |rows: &mut Rows, values: Option<&dyn Fn(&mut String)>, number, count| {
        if row {
            match values {
                Some(write) => rows.text.push_with(write),
                None => rows.text.push_null(),
            }
            rows.number.push(number);
            rows.count.push(count);
        }
    };
    match &e.value {
        OutValue::Items(items) => {
            text_row(rows, None, None, items.len() as i32);
            json.push_str(",\"Value\":[");
            let here = path.len();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                let _ = write!(path, "[{i}]");
                emit_dataset(run, item, path, depth + 1, json, rows)?;
                path.truncate(here);
            }
            json.push(']');
        }
        OutValue::Empty => {
            if bulk {
                json.push_str(",\"BulkDataURI\":\"dicomlake:bulk\"");
            }
            text_row(rows, None, None, 0);
        }
        OutValue::Strings(values) => {
            if numeric {
                return Err(Decline::new("new text in a number VR"));
            }
            if bulk {
                json.push_str(",\"BulkDataURI\":\"dicomlake:bulk\"");
            } else {
                json.push_str(",\"Value\":[");
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        json.push(',');
                    }
                    json_str(json, v);
                }
                json.push(']');
            }
            let join = |d: &mut String| d.push_str(&values.join("\\"));
            text_row(rows, Some(&join), None, values.len() as i32);
        }
        OutValue::Raw(s, t) if binary => {
            let data = run.bytes(*s, *t);
            if bulk || data.len() > BULK_THRESHOLD {
                json.push_str(",\"BulkDataURI\":\"dicomlake:bulk\"");
            } else if !data.is_empty() {
                json.push_str(",\"InlineBinary\":\"");
                match word_bytes(&e.vr) {
                    // InlineBinary is little endian (PS3.18 F.2.7), as dcm2json writes it
                    Some(width) if !run.little => json.push_str(&base64(&swapped(data, width))),
                    _ => json.push_str(&base64(data)),
                }
                json.push('"');
            }
            let hex = |d: &mut String| hex_bytes(d, data);
            let short = !data.is_empty() && data.len() <= SHORT_BINARY;
            text_row(
                rows,
                short.then_some(&hex as &dyn Fn(&mut String)),
                None,
                (!data.is_empty()) as i32,
            );
        }
        OutValue::Raw(s, t) => {
            let Decoded::Values(items) = run.decoded(&e.vr, *s, *t)? else {
                return Err(Decline::new("bytes of a text VR"));
            };
            let items = significant(&e.vr, items)?;
            if bulk {
                json.push_str(",\"BulkDataURI\":\"dicomlake:bulk\"");
            } else if !items.is_empty() {
                json_values(json, &e.vr, &items)?;
            }
            let number = match items.first() {
                Some(Item::Decimal(_, f) | Item::Float(f)) if numeric => Some(*f),
                Some(Item::Integer(_, n)) if numeric => Some(*n as f64),
                Some(Item::Int(n)) if numeric => Some(*n as f64),
                _ => None,
            };
            let join = |d: &mut String| {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        d.push('\\');
                    }
                    item_text(d, item);
                }
            };
            let text = (!items.is_empty()).then_some(&join as &dyn Fn(&mut String));
            text_row(rows, text, number, items.len() as i32);
        }
    }
    Ok(())
}

fn json_values(json: &mut String, vr: &[u8; 2], items: &[Item]) -> Result<(), Decline> {
    json.push_str(",\"Value\":[");
    let number = NUMBER_VRS.contains(&vr);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        match item {
            Item::Name(_, components) => {
                if components.len() > 3 {
                    return Err(Decline::new("PN with more than 3 components"));
                }
                json.push('{');
                let keys = ["Alphabetic", "Ideographic", "Phonetic"];
                for (k, (key, c)) in keys.iter().zip(components).enumerate() {
                    if k > 0 {
                        json.push(',');
                    }
                    let _ = write!(json, "\"{key}\":");
                    json_str(json, c);
                }
                json.push('}');
            }
            Item::Tag(t) => {
                let _ = write!(json, "\"{t:08X}\"");
            }
            _ if number => json_number(json, item),
            Item::Text(t) if PLAIN_VRS.contains(&vr) => json_str(json, t),
            _ => return Err(Decline::new("value not written as JSON")),
        }
    }
    json.push(']');
    Ok(())
}

/// A nullable string column as Arrow buffers.
struct Strings {
    offsets: Vec<i32>,
    data: String,
    valid: Vec<bool>,
}

impl Strings {
    fn with_capacity(rows: usize, bytes: usize) -> Self {
        Strings {
            offsets: Vec::with_capacity(rows + 1),
            data: String::with_capacity(bytes),
            valid: Vec::with_capacity(rows),
        }
    }

    fn push(&mut self, value: Option<&str>) {
        match value {
            Some(v) => self.push_with(|data| data.push_str(v)),
            None => self.push_null(),
        }
    }

    fn push_null(&mut self) {
        self.end(false);
    }

    /// A value written by `write` straight into the column's data.
    fn push_with(&mut self, write: impl FnOnce(&mut String)) {
        let mut data = std::mem::take(&mut self.data);
        write(&mut data);
        self.data = data;
        self.end(true);
    }

    fn get(&self, i: usize) -> Option<&str> {
        let (start, end) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        self.valid[i].then(|| &self.data[start..end])
    }

    fn end(&mut self, valid: bool) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.valid.push(valid);
        self.offsets.push(self.data.len() as i32);
    }
}

/// The element rows, column by column (`ELEMENT_SCHEMA`).
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
    let mut out = Vec::with_capacity(N * values.len());
    for v in values {
        out.extend_from_slice(&f(*v));
    }
    out
}

impl Rows {
    /// Room for `rows` rows whose texts hold about `bytes` bytes.
    fn with_capacity(rows: usize, bytes: usize) -> Self {
        Rows {
            tag: Strings::with_capacity(rows, 8 * rows),
            keyword: Strings::with_capacity(rows, 24 * rows),
            vr: Strings::with_capacity(rows, 2 * rows),
            path: Strings::with_capacity(rows, 12 * rows),
            depth: Vec::with_capacity(rows),
            creator: Strings::with_capacity(rows, 0),
            text: Strings::with_capacity(rows, bytes),
            number: Vec::with_capacity(rows),
            count: Vec::with_capacity(rows),
        }
    }

    pub fn len(&self) -> usize {
        self.depth.len()
    }

    /// The top-level rows in order: (keyword, VR, text, value count).
    pub fn top_level(&self) -> impl Iterator<Item = (Option<&str>, &str, Option<&str>, i32)> {
        (0..self.len()).filter(|&i| self.depth[i] == 0).map(|i| {
            let vr = self.vr.get(i).unwrap_or_default();
            (self.keyword.get(i), vr, self.text.get(i), self.count[i])
        })
    }

    /// Per column, its validity bitmap (None: no nulls), then its offsets and data (strings)
    /// or values: 9 columns, 25 buffers.
    pub fn into_buffers(self) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::with_capacity(25);
        let strings = |s: Strings, out: &mut Vec<Option<Vec<u8>>>| {
            let mut offsets = s.offsets;
            if offsets.is_empty() {
                offsets.push(0);
            }
            out.push(bitmap(&s.valid));
            out.push(Some(le(&offsets, i32::to_le_bytes)));
            out.push(Some(s.data.into_bytes()));
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

/// `str(creator.value)` of the private creator of `tag` among `elements` (the output's),
/// without its padding (`significant`).
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
            Decoded::Values(items) => significant(&c.vr, items)?,
            Decoded::Binary => return Err(Decline::new("binary private creator")),
        },
        OutValue::Empty => Vec::new(),
        _ => return Err(Decline::new("private creator changed")),
    };
    match items.as_slice() {
        [] => Ok(Some(String::new())),
        [Item::Text(t)] => Ok(Some(t.to_string())),
        _ => Err(Decline::new("private creator value")),
    }
}
