//! The header path of dicomlake in one pass over the raw elements: DICOM JSON, element rows
//! and de-identification, from the header's bytes.
//!
//! `dicomlake.dicom.native` builds one `Core` per process from the data dictionary and
//! Table E.1-1; `dicomlake.dicom.split` calls `Core.top_level` (the walk of `walk.Walker`,
//! raising `Malformed` as it raises `DicomParseError`, and the header's elements as pydicom
//! reads them, or None where it would read them otherwise) and `dicomlake.dicom.header` calls
//! `Core.read` per file. Whatever `read` cannot produce exactly as the pydicom path does
//! raises `Declined`, and the file takes that path instead.

mod deid;
mod emit;
mod endian;
mod parse;
mod raw;
mod values;
mod walk;

use std::collections::HashSet;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple, PyType};
use rustc_hash::{FxHashMap, FxHashSet};

use parse::{Element, Reader, Value, Vr};
use values::{decode_value, Charset, Decoded, Item, BINARY_VRS};

create_exception!(
    dicomlake_native,
    Declined,
    PyException,
    "The header is left to pydicom."
);
create_exception!(
    dicomlake_native,
    Malformed,
    PyException,
    "A walk found the file malformed: args (reason, message) of a DicomParseError."
);

/// ``f()``, or `Declined` if it panics: a bug the input found must not raise pyo3's
/// PanicException (a BaseException, past the ingest's per-file firewall); the header is then
/// left to the reference path, which reads it or records why not.
fn contained<T>(f: impl FnOnce() -> T) -> PyResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Declined::new_err(format!("the compiled core failed: {what}"))
    })
}

/// An element header found by `Core.top_level`: (tag, VR, offset, value offset, length, bad
/// VR), as `walk.Element`.
type ElementRow = (u32, Option<String>, u64, u64, u64, bool);
/// A top-level undefined-length sequence: (tag, offset, value offset, end).
type LazyRow = (u32, u64, u64, u64);

static RAW_DATA_ELEMENT: GILOnceCell<Py<PyType>> = GILOnceCell::new();
static BASE_TAG: GILOnceCell<Py<PyType>> = GILOnceCell::new();
static EMPTY_VALUE: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
static TUPLE_NEW: GILOnceCell<Py<PyAny>> = GILOnceCell::new();

/// Why the compiled path leaves a header to the reference path.
#[derive(Debug)]
pub struct Decline(pub &'static str);

impl Decline {
    pub fn new(reason: &'static str) -> Self {
        Decline(reason)
    }
}

/// The actions of Table E.1-1, named as the standard writes them.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, PartialEq)]
enum Action {
    X,
    XZ,
    XD,
    XZD,
    Z,
    ZD,
    D,
    U,
    Other,
}

impl Action {
    fn of(code: &str) -> Action {
        match code {
            "X" => Action::X,
            "X/Z" => Action::XZ,
            "X/D" => Action::XD,
            "X/Z/D" => Action::XZD,
            "Z" => Action::Z,
            "Z/D" => Action::ZD,
            "D" => Action::D,
            "U" => Action::U,
            _ => Action::Other,
        }
    }
    fn removes(self) -> bool {
        matches!(self, Action::X | Action::XZ | Action::XD | Action::XZD)
    }
    fn empties(self) -> bool {
        matches!(self, Action::Z | Action::ZD | Action::D)
    }
    fn drops_sequence(self) -> bool {
        self.removes() || self == Action::D
    }
}

struct TagInfo {
    vr: Option<Vr>, // None: not in the data dictionary (listed in Table E.1-1 only)
    ambiguous: bool,
    us_or_ss: bool,
    keyword: Option<String>,
    action: Option<Action>,
    class_uid: bool,
    most_values: usize, // the VM's most values; 0: any number
}

const PATIENT_ID: u32 = 0x0010_0020;
const ACCESSION_NUMBER: u32 = 0x0008_0050;
const STUDY_INSTANCE_UID: u32 = 0x0020_000D;
const MEDIA_UID: &str = "MediaStorageSOPInstanceUID";
const BIRTH: [u32; 2] = [0x0010_0030, 0x0010_0032];
const CONTENT_SEQUENCE: u32 = 0x0040_A730;
/// `deid._CODE_ADDRESSES`: CodingSchemeURL, URNCodeValue
const CODE_ADDRESSES: [u32; 2] = [0x0008_010E, 0x0008_0120];

/// `deid._KINDS`: what the rules read an attribute as, by its VR.
fn kind(vr: &Vr) -> Option<u8> {
    match vr {
        b"PN" => Some(0),
        b"LT" | b"ST" | b"UT" => Some(1),
        b"UR" => Some(2),
        b"UI" => Some(3),
        b"SQ" => Some(4),
        b"DA" | b"DT" => Some(5),
        _ => None,
    }
}
const CHARSET_TAG: u32 = 0x0008_0005;
const PIXEL_REPRESENTATION: u32 = 0x0028_0103;
const PATIENT_CHARACTERISTICS: [u32; 6] = [
    0x0010_0040,
    0x0010_1010,
    0x0010_1020,
    0x0010_1030,
    0x0010_2203,
    0x0010_21C0,
];
const DESCRIPTORS: [u32; 3] = [0x0008_1030, 0x0008_103E, 0x0018_1030];
/// `deid._NUMBER_VRS`: numbers held as bytes.
const BINARY_NUMBER_VRS: [&[u8; 2]; 9] = [
    b"US", b"SS", b"UL", b"SL", b"FL", b"FD", b"UV", b"SV", b"AT",
];
/// Strings a de-identified element may be given (`deid._with`): these VRs keep them as text.
const STRING_VRS: [&[u8; 2]; 14] = [
    b"AE", b"AS", b"CS", b"DA", b"DT", b"LO", b"LT", b"SH", b"ST", b"TM", b"UC", b"UI", b"UR",
    b"UT",
];

/// One element of the output header: kept as read, or changed by de-identification.
pub struct Out {
    pub tag: u32,
    pub vr: Vr,
    pub value: OutValue,
}

pub enum OutValue {
    Raw(usize, usize),
    Strings(Vec<String>),
    Empty,
    Items(Vec<Vec<Out>>),
}

struct Plan {
    secret: Vec<u8>,
    max_shift_days: u64, // 0: dates are kept
    shift: i64,          // days, from the original header's identity (`Run::originals`)
    keep_characteristics: bool,
    keep_descriptors: bool,
    safe_private: bool,
}

#[derive(Default)]
struct Counts {
    unknown: u64,
    private: u64,
    private_text: u64,
    invalid: u64,
}

struct Run<'a> {
    core: &'a Core,
    data: &'a [u8],
    implicit: bool,
    little: bool,
    // The encoding of the elements after these where it is another (the dataset after the
    // file meta): a value that swallowed some holds them in it
    after: Option<(bool, bool)>,
    charset: Charset,
    pixel_representation: Option<i128>,
    plan: Option<Plan>,
    counts: Counts,
    uids: Vec<(String, String)>,
}

/// (tag, dictionary VR or "", keyword, Table E.1-1 action, whether a class/syntax UID, the
/// VM's most values or 0)
type TagRow = (u32, String, Option<String>, Option<String>, bool, usize);
type Mark = (
    u32,
    String,
    Vec<String>,
    Vec<Vec<(u32, String, Vec<String>)>>,
);

/// The elements de-identification sets (`deid.marks`), converted once: converting them anew
/// for every header took 11 of a de-identified small header's 65 µs, and the same few are
/// given for every header. Made by the caller once per set of marks, then only read.
#[pyclass(frozen, module = "dicomlake_native")]
struct Marks(Vec<Mark>);

#[pymethods]
impl Marks {
    #[new]
    fn new(marks: Vec<Mark>) -> Self {
        Marks(marks)
    }
}

/// A top-level element of the original header that `deid.start` reads: its keyword, VR and
/// text as its element row holds them.
struct Original {
    tag: u32,
    keyword: String,
    vr: String,
    text: Option<String>,
}

/// The file meta as de-identification leaves it: the tags read, and the clean
/// MediaStorageSOPInstanceUID's text (which names an instance without a SOPInstanceUID).
type Meta = (Vec<u32>, Option<String>);

/// What `Core::run` gives: DICOM JSON, element rows, counts, UIDs replaced, the top-level tags
/// read, and (with de-identification) the originals, the date shift and the clean file meta.
type Ran = (
    String,
    emit::Rows,
    Counts,
    Vec<(String, String)>,
    Vec<u32>,
    Vec<Original>,
    i64,
    Meta,
);

// Fx hashing: these tables are built once from the standard, never from a file's contents
#[pyclass(frozen, module = "dicomlake_native")]
struct Core {
    tags: FxHashMap<u32, TagInfo>,
    identity: FxHashSet<u32>,
    repeaters: Vec<(u32, u32, Vr, bool, usize)>,
    repeating_actions: Vec<(u32, u32, Action)>,
    well_known: FxHashSet<String>,
    safe_private: FxHashMap<(String, u16, u8), Vr>,
    /// The keywords and VRs as Python strings, made once: `read` gives them for every element
    names: FxHashMap<String, Py<PyString>>,
}

fn vr_bytes(text: &str) -> (Vr, bool) {
    let b = text.as_bytes();
    if b.len() == 2 {
        ([b[0], b[1]], false)
    } else {
        ([0, 0], true) // "US or SS" and the like: resolved per element, or declined
    }
}

#[pymethods]
impl Core {
    /// `tags`: (tag, dictionary VR or "", keyword or None, Table E.1-1 action or None, whether
    /// a class/syntax UID, the VM's most values or 0); `repeaters`: pydicom's (mask1, mask2,
    /// VR, the VM's most values or 0) of repeating groups;
    /// `repeating_actions`: Table E.1-1's (listed, mask, action); `well_known`: the UIDs of
    /// the standard; `safe_private`: (creator, group, element byte, VR); `identity`: the tags
    /// of `deid.IDENTITY_KEYWORDS`, whose original text `read` returns.
    #[new]
    fn new(
        py: Python<'_>,
        tags: Vec<TagRow>,
        repeaters: Vec<(u32, u32, String, usize)>,
        repeating_actions: Vec<(u32, u32, String)>,
        well_known: Vec<String>,
        safe_private: Vec<(String, u16, u8, String)>,
        identity: Vec<u32>,
    ) -> Self {
        let tags = tags
            .into_iter()
            .map(|(tag, vr, keyword, action, class_uid, most_values)| {
                let (vr_b, ambiguous) = vr_bytes(&vr);
                let info = TagInfo {
                    vr: if vr.is_empty() { None } else { Some(vr_b) },
                    ambiguous: !vr.is_empty() && ambiguous,
                    us_or_ss: vr == "US or SS",
                    keyword,
                    action: action.as_deref().map(Action::of),
                    class_uid,
                    most_values,
                };
                (tag, info)
            })
            .collect::<FxHashMap<_, _>>();
        let keywords = tags
            .values()
            .filter(|i| i.vr.is_some())
            .filter_map(|i| i.keyword.as_deref());
        let vrs = parse::LONG_VRS
            .iter()
            .chain(&parse::SHORT_VRS)
            .filter_map(|vr| std::str::from_utf8(*vr).ok());
        let names = keywords
            .chain(vrs)
            .map(|name| (name.to_string(), PyString::intern(py, name).unbind()))
            .collect();
        Core {
            tags,
            identity: identity.into_iter().collect(),
            repeaters: repeaters
                .into_iter()
                .map(|(m1, m2, vr, most)| {
                    let (b, amb) = vr_bytes(&vr);
                    (m1, m2, b, amb, most)
                })
                .collect(),
            repeating_actions: repeating_actions
                .into_iter()
                .map(|(l, m, a)| (l, m, Action::of(&a)))
                .collect(),
            well_known: well_known.into_iter().collect(),
            safe_private: safe_private
                .into_iter()
                .map(|(c, g, e, vr)| ((c, g, e), vr_bytes(&vr).0))
                .collect(),
            names,
        }
    }

    /// Read one header: ``prefix`` is the file's prefix (preamble, file meta, the dataset up
    /// to its pixel data), ``suffix`` what follows the frames (elements after the pixel
    /// data), ``implicit`` and ``little`` its dataset's encoding, ``deid``
    /// None or (secret, max_shift_days or 0 where dates are kept,
    /// keep_patient_characteristics, keep_descriptors, safe_private, marks). Returns (DICOM
    /// JSON, element-row buffers, number of rows, (removed_unknown, removed_private,
    /// removed_private_text, removed_invalid), [(pseudonym, UID)], the top-level tags read,
    /// `promote.top_level` of the rows, {keyword: (VR, text)} of the original header's
    /// identity elements, the date shift in days, the file meta's tags, the clean file meta's
    /// MediaStorageSOPInstanceUID text or None). The date shift is `deid.date_shift_days` of
    /// the original PatientID, else of "study:" and the StudyInstanceUID; the file meta is
    /// cleaned as `deid.clean_meta` cleans it, its counts and UIDs with the dataset's.
    /// Raises `Declined` for anything not read exactly as pydicom does.
    #[allow(clippy::type_complexity)]
    #[pyo3(signature = (prefix, suffix, implicit, little, deid=None))]
    #[allow(clippy::too_many_arguments)]
    fn read<'py>(
        &self,
        py: Python<'py>,
        prefix: &[u8],
        suffix: &[u8],
        implicit: bool,
        little: bool,
        deid: Option<(Vec<u8>, u64, bool, bool, bool, Bound<'py, Marks>)>,
    ) -> PyResult<(
        String,
        Vec<Option<Bound<'py, PyBytes>>>,
        usize,
        (u64, u64, u64, u64),
        Vec<(String, String)>,
        Vec<u32>,
        Bound<'py, PyDict>,
        Bound<'py, PyDict>,
        i64,
        Vec<u32>,
        Option<String>,
    )> {
        let (plan, marks) = match deid {
            Some((secret, max_shift_days, kc, kd, sp, marks)) => (
                Some(Plan {
                    secret,
                    max_shift_days,
                    shift: 0,
                    keep_characteristics: kc,
                    keep_descriptors: kd,
                    safe_private: sp,
                }),
                Some(marks),
            ),
            None => (None, None),
        };
        let marks: &[Mark] = marks.as_ref().map_or(&[], |m| &m.get().0);
        let result = py.allow_threads(|| {
            contained(|| self.run(prefix, suffix, implicit, little, plan, marks))
        })?;
        let (json, rows, counts, uids, tags, originals, shift, (meta_tags, meta_uid)) =
            result.map_err(|d| Declined::new_err(d.0.to_string()))?;
        let top = PyDict::new(py);
        for (keyword, vr, text, count) in rows.top_level() {
            if let (Some(keyword), Some(text)) = (keyword, text) {
                if !values::is_binary(vr) {
                    top.set_item(self.name(py, keyword), (self.name(py, vr), text, count))?;
                }
            }
        }
        let original = PyDict::new(py);
        for o in originals {
            original.set_item(self.name(py, &o.keyword), (self.name(py, &o.vr), o.text))?;
        }
        let n = rows.len();
        let buffers = rows
            .into_buffers()
            .into_iter()
            .map(|b| b.map(|bytes| PyBytes::new(py, &bytes)))
            .collect();
        Ok((
            json,
            buffers,
            n,
            (
                counts.unknown,
                counts.private,
                counts.private_text,
                counts.invalid,
            ),
            uids,
            tags,
            top,
            original,
            shift,
            meta_tags,
            meta_uid,
        ))
    }
    /// `split._find_pixel_data` for a file held whole: walk the top-level elements from
    /// ``offset``, each one's items and nested elements checked as `walk.Walker.end_of`
    /// checks them. Returns the pixel data element (or None), how many elements were read,
    /// the top-level undefined-length sequences (tag, offset, value offset, end) when the
    /// whole header reads as a well-formed tree (pydicom may then read them lazily) and those
    /// pydicom would misread in any case (`walk.little_endian_items`), and what
    /// pydicom's `read_partial` reads from the header (the file up to its pixel data, those
    /// sequences cut out of it, as `split._parse_header` gives it to pydicom) as a `Walked`,
    /// or None where pydicom would read the header otherwise (`raw.read_partial`, or a
    /// dataset not as the walk reads it). Raises `Malformed` with a `DicomParseError`'s reason
    /// and message.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn top_level<'py>(
        &self,
        py: Python<'py>,
        file: &Bound<'py, PyBytes>,
        offset: u64,
        implicit: bool,
        little: bool,
        max_elements: u64,
        max_depth: usize,
    ) -> PyResult<(Option<ElementRow>, u64, Vec<LazyRow>, Option<Walked>)> {
        let data = file.as_bytes();
        let (pixel, count, lazy, read) = py
            .allow_threads(|| {
                contained(|| {
                    let (pixel, count, lazy) = self.walk_top_level(
                        data,
                        offset,
                        implicit,
                        little,
                        max_elements,
                        max_depth,
                    )?;
                    let end = pixel.as_ref().map_or(data.len(), |p| p.2 as usize);
                    let mut header = Vec::new();
                    let mut at = 0;
                    for &(_, start, _, stop) in &lazy {
                        header.extend_from_slice(&data[at..start as usize]);
                        at = stop as usize;
                    }
                    let cut = !lazy.is_empty();
                    if cut {
                        header.extend_from_slice(&data[at..end]);
                    }
                    let read = raw::read_partial(if cut { &header } else { &data[..end] }, little)
                        .ok()
                        .filter(|h| h.meta_end as u64 == offset && h.implicit == implicit);
                    Ok((pixel, count, lazy, read.map(|h| (h, cut.then_some(header)))))
                })
            })?
            .map_err(|m: walk::Malformed| Malformed::new_err((m.0, m.1)))?;
        // Offsets into the header pydicom reads: the file's own where nothing is cut
        let walked = read.map(|(h, cut)| Walked {
            header: cut.map_or_else(|| file.clone().unbind(), |c| PyBytes::new(py, &c).unbind()),
            meta: h.meta,
            dataset: h.dataset,
            implicit,
            little,
        });
        Ok((pixel, count, lazy, walked))
    }
}

/// What pydicom's `read_partial` reads from a header (`Core.top_level`), its `RawDataElement`s
/// made only when asked for: one of the dataset's by tag (`raw`), or all of the file meta's or
/// the dataset's, as `read_dataset`'s dict holds them (`elements`).
#[pyclass(frozen, module = "dicomlake_native")]
struct Walked {
    header: Py<PyBytes>,
    meta: Vec<raw::Raw>,
    dataset: Vec<raw::Raw>,
    implicit: bool,
    little: bool,
}

#[pymethods]
impl Walked {
    /// The dataset's `RawDataElement` the dict holds under ``tag`` (a repeated tag's last).
    fn raw<'py>(&self, py: Python<'py>, tag: u32) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(r) = self.dataset.iter().rev().find(|r| r.tag == tag) else {
            return Ok(None);
        };
        let header = self.header.bind(py).as_bytes();
        raw_element(py, r, header, self.implicit, self.little).map(Some)
    }

    /// The dataset's tags, ascending, each once (the dict's keys, sorted).
    fn tags(&self) -> Vec<u32> {
        let mut tags: Vec<u32> = self.dataset.iter().map(|r| r.tag).collect();
        tags.sort_unstable();
        tags.dedup();
        tags
    }

    /// The dict `read_dataset` makes of the file meta's (``meta``) or the dataset's elements.
    fn elements<'py>(&self, py: Python<'py>, meta: bool) -> PyResult<Bound<'py, PyDict>> {
        let header = self.header.bind(py).as_bytes();
        if meta {
            raw_elements(py, &self.meta, header, false, true)
        } else {
            raw_elements(py, &self.dataset, header, self.implicit, self.little)
        }
    }
}

/// The dict `read_dataset` makes of `data_element_generator`'s `RawDataElement`s (a repeated
/// tag keeps its place and takes the last value); an empty value is pydicom's for its VR.
fn raw_elements<'py>(
    py: Python<'py>,
    rows: &[raw::Raw],
    data: &[u8],
    implicit: bool,
    little: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for r in rows {
        let elem = raw_element(py, r, data, implicit, little)?;
        out.set_item(elem.get_item(0)?, elem)?;
    }
    Ok(out)
}

/// One `RawDataElement`, as `data_element_generator` yields it; an empty value is pydicom's
/// for its VR.
fn raw_element<'py>(
    py: Python<'py>,
    r: &raw::Raw,
    data: &[u8],
    implicit: bool,
    little: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let class = RAW_DATA_ELEMENT.import(py, "pydicom.dataelem", "RawDataElement")?;
    let base_tag = BASE_TAG.import(py, "pydicom.tag", "BaseTag")?;
    let empty = EMPTY_VALUE.import(py, "pydicom.dataelem", "empty_value_for_VR")?;
    let new = TUPLE_NEW.get_or_try_init(py, || {
        py.get_type::<PyTuple>()
            .getattr("__new__")
            .map(Bound::unbind)
    })?;
    let tag = base_tag.call1((r.tag,))?;
    let vr = r.vr.map(|v| std::str::from_utf8(v).unwrap_or_default());
    let value = if r.length > 0 {
        PyBytes::new(py, &data[r.at..r.at + r.length as usize]).into_any()
    } else {
        empty.call1((vr, true))?
    };
    let fields = (
        tag, vr, r.length, value, r.at, implicit, little, true, false,
    );
    new.bind(py).call1((class, fields))
}

impl Core {
    /// A keyword's or VR's Python string: the one made for it (`Core::names`), if any.
    fn name<'py>(&self, py: Python<'py>, text: &str) -> Bound<'py, PyString> {
        match self.names.get(text) {
            Some(name) => name.bind(py).clone(),
            None => PyString::new(py, text),
        }
    }

    #[allow(clippy::type_complexity)]
    fn walk_top_level(
        &self,
        data: &[u8],
        mut offset: u64,
        implicit: bool,
        little: bool,
        max_elements: u64,
        max_depth: usize,
    ) -> Result<(Option<ElementRow>, u64, Vec<LazyRow>), walk::Malformed> {
        let named = |tag: u32| self.is_sequence(tag);
        let mut walker = walk::Walker {
            data,
            little,
            elements: 0,
            max_elements,
            max_depth,
            named_sequence: &named,
        };
        let start = offset as usize;
        let (mut lazy, mut owns) = (Vec::new(), Vec::new());
        let mut pixel = None;
        while offset < data.len() as u64 {
            let elem = walker.element(offset, implicit, little)?;
            if parse::PIXEL_TAGS.contains(&elem.tag) {
                pixel = Some(elem);
                break;
            }
            let end = walker.end_of(&elem, implicit)?;
            let sequence = match elem.vr {
                Some(vr) => &vr == b"SQ",
                None => implicit && named(elem.tag),
            };
            // `walk.little_endian_items`: a UN whose items pydicom would misread, always cut
            let own = elem.vr == Some(*b"UN") && !little;
            if (sequence || own) && elem.length == walk::UNDEFINED {
                lazy.push((elem.tag, elem.offset, elem.value_offset, end));
                owns.push(own);
            }
            offset = end;
        }
        // Only where the whole header reads as a tree: otherwise pydicom reads it all now
        let header_end = pixel.as_ref().map_or(data.len(), |p| p.offset as usize);
        let is_sequence = |tag: u32| self.is_sequence(tag);
        let tree = Reader {
            data: &data[..header_end],
            implicit,
            little,
            is_sequence: &is_sequence,
        };
        if !lazy.is_empty() && tree.top_level(start).is_err() {
            let mut own = owns.into_iter();
            lazy.retain(|_| own.next().unwrap());
        }
        let row = pixel.map(|e| {
            let vr = e.vr.map(|v| String::from_utf8_lossy(&v).into_owned());
            (e.tag, vr, e.offset, e.value_offset, e.length, e.bad_vr)
        });
        Ok((row, walker.elements, lazy))
    }

    fn is_sequence(&self, tag: u32) -> bool {
        self.dictionary_vr(tag).0 == Some(*b"SQ")
    }

    #[allow(clippy::type_complexity)]
    fn run(
        &self,
        prefix: &[u8],
        suffix: &[u8],
        implicit: bool,
        little: bool,
        plan: Option<Plan>,
        marks: &[Mark],
    ) -> Result<Ran, Decline> {
        let start = parse::dataset_start(prefix)?;
        let is_sequence = |tag: u32| self.is_sequence(tag);
        let reader = Reader {
            data: prefix,
            implicit,
            little,
            is_sequence: &is_sequence,
        };
        let (mut elements, pixel_at) = reader.top_level(start)?;
        // The elements after the pixel data (padding, signatures): read as if they followed
        // the header, after an encapsulated pixel data's sequence delimiter
        let delimiter = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00";
        let trailing = suffix.strip_prefix(delimiter.as_slice()).unwrap_or(suffix);
        let joined;
        let data = if trailing.is_empty() {
            prefix
        } else {
            joined = [&prefix[..pixel_at], trailing].concat();
            let reader = Reader {
                data: &joined,
                implicit,
                little,
                is_sequence: &is_sequence,
            };
            elements = reader.top_level(start)?.0;
            &joined
        };
        let top: Vec<u32> = elements.iter().map(|e| e.tag).collect();
        let mut run = Run {
            core: self,
            data,
            implicit,
            little,
            after: None,
            charset: Charset::Latin1,
            pixel_representation: None,
            plan,
            counts: Counts::default(),
            uids: Vec::new(),
        };
        run.top_level_settings(&elements)?;
        let mut originals = Vec::new();
        let mut meta = (Vec::new(), None);
        if let Some(plan) = &run.plan {
            originals = run.originals(&elements)?;
            if plan.max_shift_days > 0 {
                let key = shift_key(&originals)?;
                let shift = deid::date_shift_days(&plan.secret, &key, plan.max_shift_days);
                run.plan.as_mut().unwrap().shift = shift;
            }
            let meta_reader = Reader {
                data: &prefix[..start],
                implicit: false,
                little: true,
                is_sequence: &is_sequence,
            };
            meta = run.clean_meta(&meta_reader.top_level(parse::meta_start(prefix))?.0)?;
        }
        let mut out = if run.plan.is_some() {
            run.clean(&elements, 0)?
        } else {
            run.keep(&elements, 0)?
        };
        if run.plan.is_some() {
            apply_marks(&mut out, marks)?;
        }
        let (json, rows) = emit::emit(&run, &out)?;
        let shift = run.plan.as_ref().map_or(0, |p| p.shift);
        Ok((
            json, rows, run.counts, run.uids, top, originals, shift, meta,
        ))
    }

    /// The data dictionary's VR of a standard tag (repeating groups included), and whether
    /// the tag is known at all; None for private and unknown tags.
    fn dictionary_vr(&self, tag: u32) -> (Option<Vr>, bool) {
        if let Some(info) = self.tags.get(&tag) {
            if info.vr.is_some() {
                return (info.vr, info.ambiguous);
            }
        }
        if (tag >> 16) % 2 == 1 {
            return (None, false);
        }
        for &(m1, m2, vr, amb, _) in &self.repeaters {
            if (tag ^ m1) & m2 == 0 {
                return (Some(vr), amb);
            }
        }
        (None, false)
    }

    /// `deid._not_its_kind`: written with a VR of another kind than its dictionary VR's.
    fn not_its_kind(&self, tag: u32, vr: &Vr) -> bool {
        match self.dictionary_vr(tag) {
            (Some(dictionary), false) => kind(&dictionary).is_some_and(|k| kind(vr) != Some(k)),
            _ => false,
        }
    }

    /// `deid._most_values`: the most values the tag's VM allows; 0 for any number.
    fn most_values(&self, tag: u32) -> usize {
        if let Some(info) = self.tags.get(&tag) {
            if info.vr.is_some() {
                return info.most_values;
            }
        }
        self.repeaters
            .iter()
            .find(|&&(m1, m2, _, _, _)| (tag ^ m1) & m2 == 0)
            .map_or(0, |r| r.4)
    }

    fn action(&self, tag: u32) -> Option<Action> {
        if let Some(action) = self.tags.get(&tag).and_then(|i| i.action) {
            return Some(action);
        }
        self.repeating_actions
            .iter()
            .find(|(l, m, _)| tag & m == *l)
            .map(|(_, _, a)| *a)
    }

    fn known(&self, tag: u32) -> bool {
        self.action(tag).is_some()
            || self.tags.get(&tag).is_some_and(|i| i.vr.is_some())
            || self
                .repeaters
                .iter()
                .any(|&(m1, m2, _, _, _)| (tag ^ m1) & m2 == 0)
    }

    pub fn keyword(&self, tag: u32) -> Option<&str> {
        self.tags.get(&tag).and_then(|i| {
            if i.vr.is_some() {
                i.keyword.as_deref()
            } else {
                None
            }
        })
    }
}

/// `deid.start`'s date shift key: the original PatientID, else "study:" and the original
/// StudyInstanceUID (declined where either is held as bytes or items: pydicom's text of them
/// is not the row's).
fn shift_key(originals: &[Original]) -> Result<String, Decline> {
    let text = |tag: u32| -> Result<&str, Decline> {
        match originals.iter().find(|o| o.tag == tag) {
            None => Ok(""),
            Some(o) if o.vr == "SQ" || values::is_binary(&o.vr) => {
                Err(Decline::new("identity held as bytes"))
            }
            Some(o) => Ok(deid::norm(o.text.as_deref().unwrap_or_default())),
        }
    };
    let patient = text(PATIENT_ID)?;
    Ok(if patient.is_empty() {
        format!("study:{}", text(STUDY_INSTANCE_UID)?)
    } else {
        patient.to_string()
    })
}

fn apply_marks(out: &mut Vec<Out>, marks: &[Mark]) -> Result<(), Decline> {
    for (tag, vr, values, items) in marks {
        let vr_b = vr_bytes(vr).0;
        let value = if vr == "SQ" {
            OutValue::Items(
                items
                    .iter()
                    .map(|item| {
                        item.iter()
                            .map(|(t, v, vals)| Out {
                                tag: *t,
                                vr: vr_bytes(v).0,
                                value: OutValue::Strings(vals.clone()),
                            })
                            .collect()
                    })
                    .collect(),
            )
        } else {
            OutValue::Strings(values.clone())
        };
        match out.binary_search_by_key(tag, |o| o.tag) {
            Ok(i) => {
                if out[i].vr != vr_b {
                    return Err(Decline::new("marked element with another VR"));
                }
                out[i].value = value;
            }
            Err(i) => out.insert(
                i,
                Out {
                    tag: *tag,
                    vr: vr_b,
                    value,
                },
            ),
        }
    }
    Ok(())
}

impl<'a> Run<'a> {
    fn bytes(&self, start: usize, end: usize) -> &'a [u8] {
        &self.data[start..end]
    }

    fn top_level_settings(&mut self, elements: &[Element]) -> Result<(), Decline> {
        for e in elements {
            if let (CHARSET_TAG, Value::Bytes(s, t)) = (e.tag, &e.value) {
                let raw = self.bytes(*s, *t);
                let text = std::str::from_utf8(raw).map_err(|_| Decline::new("charset"))?;
                self.charset = match text.trim_end_matches([' ', '\0']) {
                    "" | "ISO_IR 6" | "ISO_IR 100" => Charset::Latin1,
                    "ISO_IR 192" => Charset::Utf8,
                    _ => return Err(Decline::new("character set not handled")),
                };
            }
            if let (PIXEL_REPRESENTATION, Value::Bytes(s, t)) = (e.tag, &e.value) {
                let vr = if self.implicit { *b"US" } else { e.vr };
                if let Ok(Decoded::Values(v)) =
                    decode_value(self.bytes(*s, *t), &vr, self.charset, self.little)
                {
                    if let [Item::Int(n)] = v.as_slice() {
                        self.pixel_representation = Some(*n);
                    }
                }
            }
        }
        Ok(())
    }

    /// The VR an element is read with: its own (explicit), or the dictionary's (implicit).
    fn vr_of(&self, e: &Element, depth: usize) -> Result<Vr, Decline> {
        if !self.implicit {
            if &e.vr == b"UN" {
                // pydicom reads UN as the dictionary's VR where it knows the tag
                return Err(Decline::new("UN element"));
            }
            return Ok(e.vr);
        }
        if matches!(e.value, Value::Items(_)) {
            return Ok(*b"SQ");
        }
        let (group, element) = (e.tag >> 16, e.tag & 0xFFFF);
        if group % 2 == 1 {
            if (0x10..=0xFF).contains(&element) {
                return Ok(*b"LO");
            }
            return Err(Decline::new("implicit private element"));
        }
        match self.core.dictionary_vr(e.tag) {
            (Some(vr), false) => Ok(vr),
            (Some(_), true) => {
                // 'US or SS' of a top-level element: pydicom picks by PixelRepresentation
                let us_ss = self.us_or_ss(e.tag);
                match (us_ss, depth, self.pixel_representation) {
                    (true, 0, Some(0)) => Ok(*b"US"),
                    (true, 0, Some(1)) => Ok(*b"SS"),
                    _ => Err(Decline::new("ambiguous VR")),
                }
            }
            (None, _) => Err(Decline::new("implicit element not in the dictionary")),
        }
    }

    fn us_or_ss(&self, tag: u32) -> bool {
        // The LUT descriptors are converted by pydicom in a way of their own
        !matches!(tag, 0x0028_1101 | 0x0028_1102 | 0x0028_1103 | 0x0028_3002)
            && self.core.tags.get(&tag).is_some_and(|i| i.us_or_ss)
    }

    fn decoded(&self, vr: &Vr, start: usize, end: usize) -> Result<Decoded<'a>, Decline> {
        decode_value(self.bytes(start, end), vr, self.charset, self.little)
    }

    fn check_item_charset(e: &Element, depth: usize) -> Result<(), Decline> {
        if depth > 0 && e.tag == CHARSET_TAG {
            return Err(Decline::new("character set in a sequence item"));
        }
        Ok(())
    }

    /// The header as it is (no de-identification).
    fn keep(&self, elements: &[Element], depth: usize) -> Result<Vec<Out>, Decline> {
        elements.iter().map(|e| self.keep_one(e, depth)).collect()
    }

    fn keep_one(&self, e: &Element, depth: usize) -> Result<Out, Decline> {
        Self::check_item_charset(e, depth)?;
        Ok(Out {
            tag: e.tag,
            vr: self.vr_of(e, depth)?,
            value: self.keep_value(e, depth)?,
        })
    }

    /// `deid.clean_meta`: the file meta's elements, read and cleaned as the explicit VR little
    /// endian they are written in (a value that swallowed elements may hold the dataset's).
    fn clean_meta(&mut self, elements: &[Element]) -> Result<Meta, Decline> {
        let dataset = (self.implicit, self.little, self.charset);
        self.after = Some((self.implicit, self.little));
        (self.implicit, self.little, self.charset) = (false, true, Charset::Latin1);
        let uid = self.clean(elements, 0).and_then(|out| {
            let (_, rows) = emit::emit(self, &out)?;
            let mut named = rows
                .top_level()
                .filter(|(keyword, ..)| *keyword == Some(MEDIA_UID));
            match named.next() {
                Some((_, vr, _, _)) if vr == "SQ" || values::is_binary(vr) => {
                    Err(Decline::new("MediaStorageSOPInstanceUID held as bytes"))
                }
                Some((_, _, text, _)) => Ok(text.map(str::to_string)),
                None => Ok(None),
            }
        });
        (self.implicit, self.little, self.charset) = dataset;
        self.after = None;
        Ok((elements.iter().map(|e| e.tag).collect(), uid?))
    }

    /// The original header's identity elements (`Core.identity`), as their rows hold them.
    fn originals(&self, elements: &[Element]) -> Result<Vec<Original>, Decline> {
        let picked = elements
            .iter()
            .filter(|e| self.core.identity.contains(&e.tag))
            .map(|e| self.keep_one(e, 0))
            .collect::<Result<Vec<_>, _>>()?;
        let (_, rows) = emit::emit(self, &picked)?;
        let originals = picked
            .iter()
            .zip(rows.top_level())
            .map(|(e, (keyword, vr, text, _))| Original {
                tag: e.tag,
                keyword: keyword.unwrap_or_default().to_string(),
                vr: vr.to_string(),
                text: text.map(str::to_string),
            });
        Ok(originals.collect())
    }

    /// The text values of an element (`str(v)` of each), or a decline when it holds others.
    fn strings(&self, vr: &Vr, e: &Element) -> Result<Vec<String>, Decline> {
        let Value::Bytes(s, t) = e.value else {
            return Err(Decline::new("sequence where text was expected"));
        };
        match self.decoded(vr, s, t)? {
            Decoded::Values(items) => items
                .into_iter()
                .map(|i| match i {
                    Item::Text(t) => Ok(t.into_owned()),
                    _ => Err(Decline::new("number where text was expected")),
                })
                .collect(),
            Decoded::Binary => Err(Decline::new("bytes where text was expected")),
        }
    }

    fn uid(&mut self, value: &str) -> String {
        let original = deid::norm(value);
        if original.is_empty() {
            return String::new();
        }
        let secret = &self.plan.as_ref().unwrap().secret;
        let out = deid::uid_pseudonym(secret, original);
        self.uids.push((out.clone(), original.to_string()));
        out
    }

    /// `deid._clean`: the elements of one dataset that the rules keep, cleaned.
    fn clean(&mut self, elements: &[Element], depth: usize) -> Result<Vec<Out>, Decline> {
        let mut kept: Vec<Out> = Vec::with_capacity(elements.len());
        let mut creators: Vec<u32> = Vec::new();
        let mut kept_private: HashSet<u32> = HashSet::new();
        for e in elements {
            Self::check_item_charset(e, depth)?;
            let (group, element) = (e.tag >> 16, e.tag & 0xFFFF);
            if element == 0 {
                continue;
            }
            if group % 2 == 1 {
                if (0x10..=0xFF).contains(&element) {
                    creators.push(e.tag);
                    let vr = self.vr_of(e, depth)?;
                    let Value::Bytes(s, t) = e.value else {
                        return Err(Decline::new("private creator sequence"));
                    };
                    kept.push(Out {
                        tag: e.tag,
                        vr,
                        value: OutValue::Raw(s, t),
                    });
                } else if self.safe_private(elements, e, depth)? {
                    kept_private.insert((group << 16) | (element >> 8));
                    let vr = self.vr_of(e, depth)?;
                    let value = match &e.value {
                        Value::Bytes(s, t) => OutValue::Raw(*s, *t),
                        Value::Items(_) => return Err(Decline::new("safe private sequence")),
                    };
                    kept.push(Out {
                        tag: e.tag,
                        vr,
                        value,
                    });
                }
                continue;
            }
            if !self.core.known(e.tag) {
                self.counts.unknown += 1;
                continue;
            }
            if let Some(out) = self.clean_element(e, depth)? {
                if self.invalid(&out)? {
                    self.counts.invalid += 1;
                } else {
                    kept.push(out);
                }
            }
        }
        kept.retain(|o| !creators.contains(&o.tag) || kept_private.contains(&o.tag));
        Ok(kept)
    }

    /// The private creator's text for the block of `tag`, among `elements`.
    fn creator(
        &self,
        elements: &[Element],
        tag: u32,
        depth: usize,
    ) -> Result<Option<String>, Decline> {
        let creator_tag = (tag & 0xFFFF_0000) | ((tag & 0xFFFF) >> 8);
        let Ok(i) = elements.binary_search_by_key(&creator_tag, |e| e.tag) else {
            return Ok(None);
        };
        let c = &elements[i];
        let vr = self.vr_of(c, depth)?;
        if !STRING_VRS.contains(&&vr) {
            return Err(Decline::new("private creator VR"));
        }
        let values = self.strings(&vr, c)?;
        match values.len() {
            0 => Ok(Some(String::new())),
            1 => Ok(values.into_iter().next()),
            _ => Err(Decline::new("multi-valued private creator")),
        }
    }

    fn safe_private(
        &mut self,
        elements: &[Element],
        e: &Element,
        depth: usize,
    ) -> Result<bool, Decline> {
        let (group, element) = (e.tag >> 16, e.tag & 0xFFFF);
        let plan = self.plan.as_ref().unwrap();
        let mut listed = None;
        if plan.safe_private && element >= 0x1000 {
            if let Some(creator) = self.creator(elements, e.tag, depth)? {
                let key = (
                    deid::norm(&creator).to_string(),
                    group as u16,
                    (element & 0xFF) as u8,
                );
                listed = self.core.safe_private.get(&key).copied();
            }
        }
        let Some(listed) = listed else {
            self.counts.private += 1;
            return Ok(false);
        };
        let vr = self.vr_of(e, depth)?;
        let numbers = match &e.value {
            Value::Items(_) => false,
            Value::Bytes(s, t) => match self.decoded(&vr, *s, *t)? {
                Decoded::Values(items) => items.iter().all(|i| {
                    matches!(
                        i,
                        Item::Decimal(..) | Item::Integer(..) | Item::Int(_) | Item::Float(_)
                    )
                }),
                Decoded::Binary => false,
            },
        };
        if vr != listed || !numbers {
            self.counts.private_text += 1;
            return Ok(false);
        }
        if let Value::Bytes(s, t) = e.value {
            if self.swallowing(e.tag, &vr, self.bytes(s, t)) {
                self.counts.invalid += 1;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Rule 10 (`deid._control`, `deid._out_of_form`, `deid._too_many`, `deid._swallowing`):
    /// whether a text element the rules keep holds a control character no text VR allows or
    /// a value out of its VR's form, or an element kept as read holds more values than its VM
    /// allows, or is binary data ending in elements.
    /// Values are decoded only where the bytes cannot rule it out.
    fn invalid(&self, out: &Out) -> Result<bool, Decline> {
        let text = STRING_VRS.contains(&&out.vr);
        // A value out of its VR's form (`deid._out_of_form`), such as a name typed as a weight
        let (s, t) = match &out.value {
            OutValue::Strings(values) => {
                let formed = deid::has_form(&out.vr);
                if formed
                    && values
                        .iter()
                        .any(|v| !deid::in_form(&out.vr, padless(v.as_bytes())))
                {
                    return Ok(true);
                }
                return Ok(text
                    && values
                        .iter()
                        .any(|v| v.chars().any(deid::is_forbidden_control)));
            }
            OutValue::Raw(s, t) if &out.vr != b"SQ" => (*s, *t),
            _ => return Ok(false),
        };
        let bytes = self.bytes(s, t);
        let formed = deid::has_form(&out.vr);
        if formed
            && bytes
                .split(|&b| b == b'\\')
                .any(|v| !deid::in_form(&out.vr, padless(v)))
        {
            return Ok(true);
        }
        let most = self.core.most_values(out.tag);
        // Decoding maps each byte below 0x80 to itself, so a control character comes from a
        // control byte (one in the padding that decoding strips is a false alarm); and it
        // gives at most one value per backslash plus one, or per width
        let control = text && bytes.iter().any(|&b| deid::is_forbidden_control(b as char));
        let many = most > 0 && Self::values_at_most(&out.vr, bytes) > most;
        if self.swallowing(out.tag, &out.vr, bytes) {
            self.decoded(&out.vr, s, t)?; // one pydicom cannot read is removed uncounted
            return Ok(true);
        }
        if !control && !many {
            return Ok(false);
        }
        let values = match self.decoded(&out.vr, s, t)? {
            Decoded::Values(items) => items,
            Decoded::Binary => Vec::new(),
        };
        if most > 0 && values.len() > most {
            return Ok(true);
        }
        Ok(text
            && values.iter().any(|i| match i {
                Item::Text(t) => t.chars().any(deid::is_forbidden_control),
                _ => false,
            }))
    }

    /// `deid._swallowing`: whether binary data kept as read ends in whole elements after
    /// its own.
    fn swallowing(&self, tag: u32, vr: &Vr, bytes: &[u8]) -> bool {
        if !BINARY_VRS.contains(&vr) && !BINARY_NUMBER_VRS.contains(&vr) {
            return false;
        }
        let known = |t: u32| self.core.known(t);
        let named = |t: u32| self.core.is_sequence(t);
        let ends = |(implicit, little)| {
            walk::ends_in_elements(bytes, tag, implicit, little, &known, &named)
        };
        ends((self.implicit, self.little)) || self.after.is_some_and(ends)
    }

    /// The most values `bytes` of this VR can decode to.
    fn values_at_most(vr: &Vr, bytes: &[u8]) -> usize {
        match vr {
            b"US" | b"SS" => bytes.len() / 2,
            b"UL" | b"SL" | b"FL" | b"AT" => bytes.len() / 4,
            b"FD" | b"UV" | b"SV" => bytes.len() / 8,
            _ if BINARY_VRS.contains(&vr) => 1,
            _ => bytes.iter().filter(|&&b| b == b'\\').count() + 1,
        }
    }

    /// `deid._clean` reads every element before its rule, and removes one it cannot read,
    /// even where the rule would empty it: declined here, for the Python path to do so.
    fn readable(&self, e: &Element, vr: &Vr) -> Result<(), Decline> {
        if let Value::Bytes(s, t) = e.value {
            self.decoded(vr, s, t)?;
        }
        Ok(())
    }

    /// `deid._with`: the element given these values, or emptied when they are all empty.
    fn with(tag: u32, vr: Vr, values: Vec<String>) -> Result<Out, Decline> {
        if !STRING_VRS.contains(&&vr) {
            return Err(Decline::new("new text for a VR that is no text"));
        }
        let value = if values.iter().all(String::is_empty) {
            OutValue::Empty
        } else {
            OutValue::Strings(values)
        };
        Ok(Out { tag, vr, value })
    }

    /// `deid._by_rules`: rules 2-9 for one standard element.
    fn clean_element(&mut self, e: &Element, depth: usize) -> Result<Option<Out>, Decline> {
        let tag = e.tag;
        let vr = self.vr_of(e, depth)?;
        if self.core.not_its_kind(tag, &vr) {
            self.counts.invalid += 1;
            return Ok(None);
        }
        let action = self.core.action(tag);
        let plan = self.plan.as_ref().unwrap();
        let raw = |e: &Element| -> Option<Out> {
            match e.value {
                Value::Bytes(s, t) => Some(Out {
                    tag: e.tag,
                    vr,
                    value: OutValue::Raw(s, t),
                }),
                Value::Items(_) => None,
            }
        };
        let keep_sequence = |run: &mut Self| -> Result<Option<Out>, Decline> {
            if let Value::Items(items) = &e.value {
                let cleaned = items
                    .iter()
                    .map(|i| run.clean(i, depth + 1))
                    .collect::<Result<_, _>>()?;
                return Ok(Some(Out {
                    tag,
                    vr,
                    value: OutValue::Items(cleaned),
                }));
            }
            Ok(raw(e))
        };
        if (plan.keep_characteristics && PATIENT_CHARACTERISTICS.contains(&tag))
            || (plan.keep_descriptors && DESCRIPTORS.contains(&tag))
        {
            return if let Value::Items(_) = e.value {
                // kept as it is: its items are not cleaned
                Ok(Some(Out {
                    tag,
                    vr,
                    value: self.keep_value(e, depth)?,
                }))
            } else {
                Ok(raw(e))
            };
        }
        if tag == PATIENT_ID || tag == ACCESSION_NUMBER {
            let keyword = if tag == PATIENT_ID {
                "PatientID"
            } else {
                "AccessionNumber"
            };
            let values = self.strings(&vr, e)?;
            let secret = &plan.secret;
            let out = values
                .iter()
                .map(|v| deid::text_pseudonym(secret, keyword, v))
                .collect();
            return Self::with(tag, vr, out).map(Some);
        }
        if matches!(&vr, b"DA" | b"DT" | b"TM") {
            if BIRTH.contains(&tag) {
                return Ok(None);
            }
            if &vr != b"TM" && plan.shift != 0 {
                let shift = plan.shift;
                let values = self.strings(&vr, e)?;
                let moved = values
                    .iter()
                    .map(|v| deid::shift(v, &vr == b"DA", shift).ok_or(Decline::new("date form")))
                    .collect::<Result<Vec<_>, _>>()?;
                return Self::with(tag, vr, moved).map(Some);
            }
            return Ok(raw(e));
        }
        if &vr == b"UI" {
            if action.is_some_and(Action::removes) {
                return Ok(None);
            }
            if matches!(action, Some(Action::Z | Action::ZD)) {
                self.readable(e, &vr)?;
                return Ok(Some(Out {
                    tag,
                    vr,
                    value: OutValue::Empty,
                }));
            }
            if action.is_none() && self.core.tags.get(&tag).is_some_and(|i| i.class_uid) {
                return Ok(raw(e));
            }
            let values = self.strings(&vr, e)?;
            if action.is_none()
                && values
                    .iter()
                    .all(|v| self.core.well_known.contains(deid::norm(v)))
            {
                return Ok(raw(e));
            }
            let out = values.iter().map(|v| self.uid(v)).collect();
            return Self::with(tag, vr, out).map(Some);
        }
        if &vr == b"SQ" {
            if action == Some(Action::Z) {
                return Ok(Some(Out {
                    tag,
                    vr,
                    value: OutValue::Items(Vec::new()),
                }));
            }
            if action.is_some_and(Action::drops_sequence) && tag != CONTENT_SEQUENCE {
                return Ok(None);
            }
            return keep_sequence(self);
        }
        if &vr == b"PN" {
            return Ok(if action == Some(Action::Z) {
                self.readable(e, &vr)?;
                Some(Out {
                    tag,
                    vr,
                    value: OutValue::Empty,
                })
            } else {
                None
            });
        }
        if action.is_some_and(Action::removes) {
            return Ok(None);
        }
        if action.is_some_and(Action::empties) {
            self.readable(e, &vr)?;
            return Ok(Some(Out {
                tag,
                vr,
                value: OutValue::Empty,
            }));
        }
        if action == Some(Action::U) {
            let values = self.strings(&vr, e)?;
            let out = values.iter().map(|v| self.uid(v)).collect();
            return Self::with(tag, vr, out).map(Some);
        }
        if &vr == b"UN" {
            return Ok(None);
        }
        if matches!(&vr, b"LT" | b"ST" | b"UT" | b"UR")
            && action.is_none()
            && !CODE_ADDRESSES.contains(&tag)
        {
            return Ok(None);
        }
        Ok(raw(e))
    }

    fn keep_value(&self, e: &Element, depth: usize) -> Result<OutValue, Decline> {
        Ok(match &e.value {
            Value::Bytes(s, t) => OutValue::Raw(*s, *t),
            Value::Items(items) => OutValue::Items(
                items
                    .iter()
                    .map(|i| self.keep(i, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

/// The version of this module's interface to `dicomlake.dicom` (`native.INTERFACE`): raised
/// with every change to what it takes or gives, so a module built from other sources than the
/// Python code calling it is refused rather than called wrongly.
const INTERFACE: u32 = 7;

#[pymodule]
fn dicomlake_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("INTERFACE", INTERFACE)?;
    m.add_class::<Core>()?;
    m.add_class::<Walked>()?;
    m.add_class::<Marks>()?;
    m.add("Declined", m.py().get_type::<Declined>())?;
    m.add("Malformed", m.py().get_type::<Malformed>())?;
    Ok(())
}

/// A value without the spaces and NULs that pad it (`str.strip(" \\x00")`).
fn padless(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|&b| b != b' ' && b != 0)
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(start, |i| i + 1);
    &value[start..end]
}
