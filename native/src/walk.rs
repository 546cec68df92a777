//! `dicomlake.dicom.walk.Walker` for a file held whole: the same walk over element and item
//! headers, the same limits, and the same errors (reason and message), at compiled speed.

use crate::endian;

pub const UNDEFINED: u64 = 0xFFFF_FFFF;
const ITEM: u32 = 0xFFFE_E000;
const ITEM_DELIMITER: u32 = 0xFFFE_E00D;
const SEQUENCE_DELIMITER: u32 = 0xFFFE_E0DD;
const LONG_VRS: [&[u8; 2]; 13] = [
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
];

/// A `DicomParseError`: its reason and message.
pub struct Malformed(pub &'static str, pub String);

pub struct Element {
    pub tag: u32,
    pub vr: Option<[u8; 2]>,
    pub offset: u64,
    pub value_offset: u64,
    pub length: u64,
    pub bad_vr: bool,
}

struct Level {
    items: bool,
    end: u64,
    implicit: bool,
    little: bool,
    owner: u32,
    depth: usize,
}

pub struct Walker<'a> {
    pub data: &'a [u8],
    /// The dataset's byte order (a level of items may have another: `Level::little`)
    pub little: bool,
    pub elements: u64,
    pub max_elements: u64,
    pub max_depth: usize,
    pub named_sequence: &'a dyn Fn(u32) -> bool,
}

pub fn tag_str(tag: u32) -> String {
    format!("({:04X},{:04X})", tag >> 16, tag & 0xFFFF)
}

fn is_vr(raw: &[u8]) -> bool {
    raw.len() == 2 && raw.iter().all(|b| 0x40 < *b && *b < 0x5B)
}

impl Walker<'_> {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn u16_at(&self, at: u64, little: bool) -> u16 {
        endian::u16_at(self.data, at as usize, little)
    }

    fn u32_at(&self, at: u64, little: bool) -> u32 {
        endian::u32_at(self.data, at as usize, little)
    }

    fn need(&self, offset: u64, count: u64, what: &str, tag: Option<u32>) -> Result<(), Malformed> {
        if offset + count > self.size() {
            let place = match tag {
                Some(t) => format!("{what} {}", tag_str(t)),
                None => what.to_string(),
            };
            return Err(Malformed(
                "truncated",
                format!(
                    "file ends at byte {} inside {place} starting at offset {offset}",
                    self.size()
                ),
            ));
        }
        Ok(())
    }

    pub fn implicit_at(&self, offset: u64, assumed: bool) -> bool {
        if offset + 6 > self.size() {
            return assumed;
        }
        !is_vr(&self.data[offset as usize + 4..offset as usize + 6])
    }

    fn peek_tag(&self, offset: u64, little: bool) -> u32 {
        (self.u16_at(offset, little) as u32) << 16 | self.u16_at(offset + 2, little) as u32
    }

    pub fn element(
        &mut self,
        offset: u64,
        implicit: bool,
        little: bool,
    ) -> Result<Element, Malformed> {
        self.need(offset, 8, "an element header", None)?;
        self.elements += 1;
        if self.elements > self.max_elements {
            return Err(Malformed(
                "too_large",
                format!(
                    "more than {} data elements (at offset {offset})",
                    self.max_elements
                ),
            ));
        }
        let raw_vr = [
            self.data[offset as usize + 4],
            self.data[offset as usize + 5],
        ];
        let tag = self.peek_tag(offset, little);
        if implicit || !is_vr(&raw_vr) {
            let length = self.u32_at(offset + 4, little) as u64;
            return Ok(Element {
                tag,
                vr: None,
                offset,
                value_offset: offset + 8,
                length,
                bad_vr: !implicit,
            });
        }
        if LONG_VRS.contains(&&raw_vr) {
            self.need(offset, 12, "the header of element", Some(tag))?;
            let length = self.u32_at(offset + 8, little) as u64;
            return Ok(Element {
                tag,
                vr: Some(raw_vr),
                offset,
                value_offset: offset + 12,
                length,
                bad_vr: false,
            });
        }
        let length = self.u16_at(offset + 6, little) as u64;
        Ok(Element {
            tag,
            vr: Some(raw_vr),
            offset,
            value_offset: offset + 8,
            length,
            bad_vr: false,
        })
    }

    pub fn end_of(&mut self, elem: &Element, implicit: bool) -> Result<u64, Malformed> {
        let mut stack: Vec<Level> = Vec::new();
        let mut offset = self.enter(elem, implicit, self.little, &mut stack)?;
        while !stack.is_empty() {
            match self.step(&mut stack, offset) {
                Ok(next) => offset = next,
                Err(err) => {
                    let guessed = stack.iter().rposition(|l| l.end != UNDEFINED);
                    match guessed {
                        Some(i) if err.0 == "truncated" || err.0 == "corrupt" => {
                            // Inside a defined-length value only guessed to hold items: bytes
                            offset = stack[i].end;
                            stack.truncate(i);
                        }
                        _ => return Err(err),
                    }
                }
            }
        }
        Ok(offset)
    }

    fn depth(stack: &[Level]) -> usize {
        stack.last().map_or(0, |l| l.depth)
    }

    fn enter(
        &mut self,
        elem: &Element,
        implicit: bool,
        little: bool,
        stack: &mut Vec<Level>,
    ) -> Result<u64, Malformed> {
        if elem.length == UNDEFINED {
            // `walk.little_endian_items`: a UN's items in big endian (PS3.5 6.2.2)
            let own = elem.vr == Some(*b"UN") && !little;
            let depth = Self::depth(stack);
            stack.push(Level {
                items: true,
                end: UNDEFINED,
                implicit: implicit || own,
                little: little || own,
                owner: elem.tag,
                depth,
            });
            return Ok(elem.value_offset);
        }
        let end = elem.value_offset + elem.length;
        if end > self.size() && elem.bad_vr {
            return Err(Malformed(
                "corrupt",
                format!(
                    "element {} at offset {} has no valid VR in an explicit VR dataset",
                    tag_str(elem.tag),
                    elem.offset
                ),
            ));
        }
        if end > self.size() {
            return Err(Malformed(
                "truncated",
                format!(
                    "element {} at offset {} declares {} bytes but the file ends at byte {}",
                    tag_str(elem.tag),
                    elem.offset,
                    elem.length,
                    self.size()
                ),
            ));
        }
        let unknown = matches!(elem.vr, None | Some([b'U', b'N']));
        if elem.length >= 8
            && elem.tag >> 16 != 0x7FE0
            && (elem.vr == Some(*b"SQ")
                || (unknown
                    && ((self.named_sequence)(elem.tag)
                        || self.peek_tag(elem.value_offset, little) == ITEM)))
        {
            let depth = Self::depth(stack);
            stack.push(Level {
                items: true,
                end,
                implicit,
                little,
                owner: elem.tag,
                depth,
            });
            return Ok(elem.value_offset);
        }
        Ok(end)
    }

    fn step(&mut self, stack: &mut Vec<Level>, offset: u64) -> Result<u64, Malformed> {
        let (items, end, implicit, little, owner, depth) = {
            let l = stack.last().unwrap();
            (l.items, l.end, l.implicit, l.little, l.owner, l.depth)
        };
        if offset == end {
            stack.pop();
            return Ok(offset);
        }
        self.need(offset, 8, "an item of", Some(owner))?;
        if end != UNDEFINED && offset + 8 > end {
            return Err(Malformed(
                "corrupt",
                format!("{} ends inside the item at offset {offset}", tag_str(owner)),
            ));
        }
        if !items {
            if self.peek_tag(offset, little) == ITEM_DELIMITER && end == UNDEFINED {
                stack.pop();
                return Ok(offset + 8);
            }
            let elem = self.element(offset, implicit, little)?;
            return self.enter(&elem, implicit, little, stack);
        }
        let tag = self.peek_tag(offset, little);
        let length = self.u32_at(offset + 4, little) as u64;
        if tag == SEQUENCE_DELIMITER && end == UNDEFINED {
            stack.pop();
            return Ok(offset + 8);
        }
        if tag != ITEM {
            return Err(Malformed(
                "corrupt",
                format!(
                    "expected an item tag in {} at offset {offset}",
                    tag_str(owner)
                ),
            ));
        }
        if depth >= self.max_depth {
            return Err(Malformed(
                "too_deep",
                format!(
                    "item at offset {offset} in {} is nested more than {} sequences deep",
                    tag_str(owner),
                    self.max_depth
                ),
            ));
        }
        let start = offset + 8;
        let mut item_end = UNDEFINED;
        if length != UNDEFINED {
            item_end = start + length;
            self.need(start, length, "an item of", Some(owner))?;
            if end != UNDEFINED && item_end > end {
                return Err(Malformed(
                    "corrupt",
                    format!(
                        "item at offset {offset} declares {length} bytes, more than {} holds",
                        tag_str(owner)
                    ),
                ));
            }
        }
        let item_implicit = implicit || self.implicit_at(start, implicit);
        stack.push(Level {
            items: false,
            end: item_end,
            implicit: item_implicit,
            little,
            owner,
            depth: depth + 1,
        });
        Ok(start)
    }
}

/// `walk.ends_in_elements`: whether `value` ends in whole data elements, tags ascending after
/// `after` (each a private one or `known`), one of them not empty: what a value holds when a
/// bad length made it swallow the elements that followed it. Runs that take more element
/// headers to rule out than `walk.run_budget` allows count as such a value.
pub fn ends_in_elements(
    value: &[u8],
    after: u32,
    implicit: bool,
    little: bool,
    known: &dyn Fn(u32) -> bool,
    named_sequence: &dyn Fn(u32) -> bool,
) -> bool {
    if value.len() < 9 {
        return false;
    }
    let mut walker = Walker {
        data: value,
        little,
        elements: 0,
        max_elements: value.len() as u64 / 8 + 1024,
        max_depth: crate::parse::MAX_DEPTH, // `walk.MAX_DEPTH`
        named_sequence,
    };
    (0..value.len() as u64 - 7).any(|k| {
        let tag = walker.peek_tag(k, little);
        if tag <= after || tag >> 16 == 0xFFFE {
            return false;
        }
        if implicit {
            let length = walker.u32_at(k + 4, little) as u64;
            if length != UNDEFINED && length > value.len() as u64 - 8 - k {
                return false;
            }
        } else if !is_vr(&value[k as usize + 4..k as usize + 6]) {
            return false;
        }
        walker
            .runs_to_end(k, after, implicit, known)
            .unwrap_or(true)
    })
}

impl Walker<'_> {
    /// Whether whole elements run from `offset` to the end (see `ends_in_elements`); None
    /// once the budget of element headers is spent.
    fn runs_to_end(
        &mut self,
        mut offset: u64,
        after: u32,
        implicit: bool,
        known: &dyn Fn(u32) -> bool,
    ) -> Option<bool> {
        let (mut tags, mut filled) = (vec![after], false);
        while offset < self.size() {
            let elem = match self.element(offset, implicit, self.little) {
                Ok(elem) => elem,
                Err(Malformed(reason, _)) => return (reason != "too_large").then_some(false),
            };
            if elem.tag <= *tags.last().unwrap() || elem.bad_vr || elem.tag >> 16 == 0xFFFE {
                return Some(false);
            }
            offset = match self.end_of(&elem, implicit) {
                Ok(end) => end,
                Err(Malformed(reason, _)) => return (reason != "too_large").then_some(false),
            };
            filled |= offset > elem.value_offset;
            tags.push(elem.tag);
        }
        // Last, as it costs most: few runs get this far
        Some(filled && tags[1..].iter().all(|&t| (t >> 16) % 2 == 1 || known(t)))
    }
}
