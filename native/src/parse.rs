//! The data elements of a dataset (either byte order), read into a tree of byte ranges.
//!
//! Anything this reader does not read exactly as pydicom does is a `Decline`: undefined lengths outside sequences, tags out of order, unknown VR bytes, a value running
//! past the end, nesting deeper than `MAX_DEPTH`.

use crate::endian;
use crate::Decline;

pub const MAX_DEPTH: usize = 64;
const ITEM: u32 = 0xFFFE_E000;
const ITEM_END: u32 = 0xFFFE_E00D;
const SEQUENCE_END: u32 = 0xFFFE_E0DD;
const UNDEFINED: u32 = 0xFFFF_FFFF;
/// The pixel data tags: a header is read up to the first of them at the top level.
pub const PIXEL_TAGS: [u32; 3] = [0x7FE0_0008, 0x7FE0_0009, 0x7FE0_0010];

/// The two VR characters; `[0, 0]` for an implicit VR element (looked up later).
pub type Vr = [u8; 2];

pub struct Element {
    pub tag: u32,
    pub vr: Vr,
    pub value: Value,
}

pub enum Value {
    Bytes(usize, usize),
    Items(Vec<Vec<Element>>),
}

pub const LONG_VRS: [&[u8; 2]; 13] = [
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV",
];
pub const SHORT_VRS: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];

pub struct Reader<'a> {
    pub data: &'a [u8],
    pub implicit: bool,
    pub little: bool,
    /// Implicit VR: whether a tag is a sequence (from the data dictionary).
    pub is_sequence: &'a dyn Fn(u32) -> bool,
}

/// Where the file meta starts: after the preamble, if any.
pub fn meta_start(data: &[u8]) -> usize {
    if data.len() >= 132 && &data[128..132] == b"DICM" {
        132
    } else {
        0
    }
}

/// Where the dataset starts: after the preamble (if any) and the group 0002 elements.
pub fn dataset_start(data: &[u8]) -> Result<usize, Decline> {
    let mut at = meta_start(data);
    while at + 8 <= data.len() && endian::u16_at(data, at, true) == 0x0002 {
        let vr = [data[at + 4], data[at + 5]];
        let (length, header) = if LONG_VRS.contains(&&vr) {
            if at + 12 > data.len() {
                return Err(Decline::new("file meta truncated"));
            }
            (endian::u32_at(data, at + 8, true), 12)
        } else if SHORT_VRS.contains(&&vr) {
            (endian::u16_at(data, at + 6, true) as u32, 8)
        } else {
            return Err(Decline::new("file meta VR"));
        };
        if length == UNDEFINED {
            return Err(Decline::new("file meta undefined length"));
        }
        at += header + length as usize;
    }
    if at > data.len() {
        return Err(Decline::new("file meta truncated"));
    }
    Ok(at)
}

impl Reader<'_> {
    fn u16_at(&self, at: usize) -> u16 {
        endian::u16_at(self.data, at, self.little)
    }

    fn u32_at(&self, at: usize) -> u32 {
        endian::u32_at(self.data, at, self.little)
    }

    fn need(&self, at: usize, count: usize) -> Result<(), Decline> {
        if at
            .checked_add(count)
            .is_none_or(|end| end > self.data.len())
        {
            return Err(Decline::new("truncated"));
        }
        Ok(())
    }

    /// The top-level elements from `at` up to the end or the pixel data, and where they end.
    pub fn top_level(&self, at: usize) -> Result<(Vec<Element>, usize), Decline> {
        self.dataset(at, self.data.len(), 0, true)
    }

    /// Elements from `at` until `end`, or, when `end` is `None`-like (usize::MAX), until an
    /// item delimiter. Returns them and the offset after the last byte read.
    fn dataset(
        &self,
        mut at: usize,
        end: usize,
        depth: usize,
        top: bool,
    ) -> Result<(Vec<Element>, usize), Decline> {
        if depth > MAX_DEPTH {
            return Err(Decline::new("nested too deep"));
        }
        let mut out: Vec<Element> = Vec::new();
        let delimited = end == usize::MAX;
        loop {
            if !delimited && at >= end {
                if at > end {
                    return Err(Decline::new("element runs past its item"));
                }
                return Ok((out, at));
            }
            if top && at >= self.data.len() {
                return Ok((out, at));
            }
            self.need(at, 8)?;
            let tag = ((self.u16_at(at) as u32) << 16) | self.u16_at(at + 2) as u32;
            if tag == ITEM_END {
                if !delimited || self.u32_at(at + 4) != 0 {
                    return Err(Decline::new("stray item delimiter"));
                }
                return Ok((out, at + 8));
            }
            if top && PIXEL_TAGS.contains(&tag) {
                return Ok((out, at));
            }
            if tag >> 16 == 0xFFFE {
                return Err(Decline::new("delimiter in a dataset"));
            }
            if let Some(last) = out.last() {
                if last.tag >= tag {
                    return Err(Decline::new("tags out of order"));
                }
            }
            let (vr, length, value_at) = if self.implicit {
                ([0, 0], self.u32_at(at + 4), at + 8)
            } else {
                let vr = [self.data[at + 4], self.data[at + 5]];
                if LONG_VRS.contains(&&vr) {
                    self.need(at, 12)?;
                    (vr, self.u32_at(at + 8), at + 12)
                } else if SHORT_VRS.contains(&&vr) {
                    (vr, self.u16_at(at + 6) as u32, at + 8)
                } else {
                    return Err(Decline::new("unknown VR"));
                }
            };
            let sequence = if self.implicit {
                (self.is_sequence)(tag)
            } else {
                &vr == b"SQ"
            };
            if sequence {
                let (items, next) = self.items(value_at, length, depth)?;
                out.push(Element {
                    tag,
                    vr,
                    value: Value::Items(items),
                });
                at = next;
                continue;
            }
            if length == UNDEFINED {
                return Err(Decline::new("undefined length outside a sequence"));
            }
            self.need(value_at, length as usize)?;
            let next = value_at + length as usize;
            out.push(Element {
                tag,
                vr,
                value: Value::Bytes(value_at, next),
            });
            at = next;
        }
    }

    fn items(
        &self,
        mut at: usize,
        length: u32,
        depth: usize,
    ) -> Result<(Vec<Vec<Element>>, usize), Decline> {
        let end = if length == UNDEFINED {
            usize::MAX
        } else {
            self.need(at, length as usize)?;
            at + length as usize
        };
        let mut items = Vec::new();
        loop {
            if end != usize::MAX && at >= end {
                if at > end {
                    return Err(Decline::new("item runs past its sequence"));
                }
                return Ok((items, at));
            }
            self.need(at, 8)?;
            let tag = ((self.u16_at(at) as u32) << 16) | self.u16_at(at + 2) as u32;
            let item_length = self.u32_at(at + 4);
            if tag == SEQUENCE_END && end == usize::MAX {
                if item_length != 0 {
                    return Err(Decline::new("sequence delimiter with a length"));
                }
                return Ok((items, at + 8));
            }
            if tag != ITEM {
                return Err(Decline::new("no item in a sequence"));
            }
            let item_end = if item_length == UNDEFINED {
                usize::MAX
            } else {
                self.need(at + 8, item_length as usize)?;
                at + 8 + item_length as usize
            };
            let (item, next) = self.dataset(at + 8, item_end, depth + 1, false)?;
            items.push(item);
            at = next;
        }
    }
}
