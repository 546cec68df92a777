//! What pydicom's `read_partial` reads from a header held whole (`split._parse_header`): the
//! preamble's place, the file meta elements and the top-level elements, each as pydicom's
//! `data_element_generator` yields it as a `RawDataElement`.
//!
//! Anything pydicom would read otherwise, warn about and re-read, or fail on is a `Decline`:
//! a file meta group in implicit VR, a command set, a dataset of fewer than 8 bytes,
//! undefined lengths, item delimiters, unknown VRs read with a 2-byte length, partial
//! element headers and values running past the end.

use crate::endian;
use crate::parse::{LONG_VRS, PIXEL_TAGS, SHORT_VRS};
use crate::Decline;

const ITEM_DELIMITER: u32 = 0xFFFE_E00D;
const UNDEFINED: u32 = 0xFFFF_FFFF;

/// A `RawDataElement`: its tag, VR (None as read implicitly), length, and where its value
/// starts (``value_tell``); the value is ``length`` bytes from there.
pub struct Raw {
    pub tag: u32,
    pub vr: Option<&'static [u8; 2]>,
    pub length: u32,
    pub at: usize,
}

/// The file meta elements (explicit VR little endian) and the dataset's elements, read up to
/// the end of ``data`` as `_read_file_meta_info` and `read_dataset` read them from
/// `read_partial`'s stream; ``meta_end`` is where the dataset starts, ``implicit`` how it is
/// read (its first element's VR bytes decide, as `_is_implicit_vr` does at the top level).
pub struct Header {
    pub meta: Vec<Raw>,
    pub meta_end: usize,
    pub implicit: bool,
    pub dataset: Vec<Raw>,
}

fn is_vr(raw: &[u8]) -> bool {
    raw.iter().all(|b| 0x40 < *b && *b < 0x5B)
}

fn tag_at(data: &[u8], at: usize, little: bool) -> u32 {
    (endian::u16_at(data, at, little) as u32) << 16 | endian::u16_at(data, at + 2, little) as u32
}

/// ``data`` read as `read_partial` reads it with `force` and a stop at the pixel data, with
/// the dataset in ``little`` endian.
pub fn read_partial(data: &[u8], little: bool) -> Result<Header, Decline> {
    let start = if data.len() >= 132 && &data[128..132] == b"DICM" {
        132
    } else {
        0
    };
    // `_is_implicit_vr` would read a group 0002 with invalid VR bytes as implicit VR
    if data.len() >= start + 6
        && endian::u16_at(data, start, true) == 0x0002
        && !is_vr(&data[start + 4..start + 6])
    {
        return Err(Decline::new("file meta in implicit VR"));
    }
    let (meta, meta_end) = elements(data, start, false, true, |tag| tag >> 16 != 0x0002)?;
    // Less would be read as an empty implicit VR dataset, or a partial header consumed
    if data.len() - meta_end < 8 {
        return Err(Decline::new("no dataset"));
    }
    // `_read_command_set_elements` reads group 0000 as implicit VR little endian (and an item
    // delimiter there consumes its header)
    let first = tag_at(data, meta_end, true);
    if first >> 16 == 0 || first == ITEM_DELIMITER {
        return Err(Decline::new("a command set"));
    }
    let implicit = !is_vr(&data[meta_end + 4..meta_end + 6]);
    let (dataset, end) = elements(data, meta_end, implicit, little, |tag| {
        PIXEL_TAGS.contains(&tag)
    })?;
    if end != data.len() {
        return Err(Decline::new("pixel data inside the header"));
    }
    Ok(Header {
        meta,
        meta_end,
        implicit,
        dataset,
    })
}

/// `data_element_generator` from ``at`` until ``stop`` holds for a tag or the data ends;
/// returns the elements and where reading stopped.
fn elements(
    data: &[u8],
    mut at: usize,
    implicit: bool,
    little: bool,
    stop: impl Fn(u32) -> bool,
) -> Result<(Vec<Raw>, usize), Decline> {
    let mut out = Vec::new();
    loop {
        let rest = data.len() - at;
        if rest == 0 {
            return Ok((out, at));
        }
        if rest < 8 {
            return Err(Decline::new("a partial element header"));
        }
        let tag = tag_at(data, at, little);
        let raw_vr = [data[at + 4], data[at + 5]];
        let implicit_length = (None, endian::u32_at(data, at + 4, little), at + 8);
        let (vr, length, value_at) = if implicit {
            implicit_length
        } else if let Some(vr) = LONG_VRS.iter().find(|v| ***v == raw_vr) {
            if rest < 12 {
                return Err(Decline::new("a partial element header"));
            }
            (Some(*vr), endian::u32_at(data, at + 8, little), at + 12)
        } else if let Some(vr) = SHORT_VRS.iter().find(|v| ***v == raw_vr) {
            (
                Some(*vr),
                endian::u16_at(data, at + 6, little) as u32,
                at + 8,
            )
        } else if raw_vr.as_slice() < b"AA".as_slice() || raw_vr.as_slice() > b"ZZ".as_slice() {
            // pydicom reads an element with VR bytes out of this range as implicit VR
            implicit_length
        } else {
            return Err(Decline::new("unknown VR"));
        };
        if tag == ITEM_DELIMITER {
            return Err(Decline::new("an item delimiter"));
        }
        if stop(tag) {
            return Ok((out, at));
        }
        if length == UNDEFINED {
            return Err(Decline::new("undefined length"));
        }
        let end = value_at + length as usize;
        if end > data.len() {
            return Err(Decline::new("a value past the end"));
        }
        out.push(Raw {
            tag,
            vr,
            length,
            at: value_at,
        });
        at = end;
    }
}
