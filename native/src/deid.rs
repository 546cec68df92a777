//! The pseudonyms and date shift of `dicomlake.dicom.deid` (algorithm version 1).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::values::py_strip;

fn mac(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    for part in parts {
        m.update(part);
    }
    m.finalize().into_bytes().into()
}

/// `deid._CONTROL`: a C0 control character that no text VR allows (all but TAB, LF, FF, CR).
pub fn is_forbidden_control(c: char) -> bool {
    c < ' ' && !matches!(c, '\t' | '\n' | '\x0c' | '\r')
}

/// Whether values of ``vr`` have a form `in_form` checks.
pub fn has_form(vr: &[u8; 2]) -> bool {
    matches!(vr, b"UI" | b"AS" | b"DA" | b"TM" | b"DT")
}

/// `deid._GRAMMARS`: whether a value (without its padding) of UI, AS, DA, TM or DT has its
/// VR's form (PS3.5 Table 6.2-1, and ACR-NEMA's for DA and TM); any other VR's always does.
pub fn in_form(vr: &[u8; 2], value: &[u8]) -> bool {
    let digits = |b: &[u8]| b.iter().all(u8::is_ascii_digit);
    let v = value;
    match vr {
        b"UI" => v.len() <= 64 && v.iter().all(|&c| c.is_ascii_digit() || c == b'.'),
        b"AS" => {
            // nnn and a unit, leading zeros or the unit left out as some devices write it
            let number = match v.last() {
                Some(b'D' | b'W' | b'M' | b'Y') => &v[..v.len() - 1],
                _ => v,
            };
            number.len() <= 3 && digits(number)
        }
        b"DA" => {
            v.is_empty()
                || (v.len() == 8 && digits(v))
                || (v.len() == 10
                    && digits(&v[..4])
                    && v[4] == b'.'
                    && digits(&v[5..7])
                    && v[7] == b'.'
                    && digits(&v[8..]))
        }
        b"TM" => v.is_empty() || time(v),
        b"DT" => v.is_empty() || date_time(v),
        _ => true,
    }
}

/// hh, then optionally [:]mm, then optionally [:]ss, then optionally a fraction after ss.
fn time(v: &[u8]) -> bool {
    let two = |i: usize| i + 2 <= v.len() && v[i..i + 2].iter().all(u8::is_ascii_digit);
    if !two(0) {
        return false;
    }
    let mut i = 2;
    for _ in 0..2 {
        if i == v.len() {
            return true;
        }
        let j = if v[i] == b':' { i + 1 } else { i };
        if !two(j) {
            return false;
        }
        i = j + 2;
    }
    fraction(&v[i..])
}

/// yyyy[mm[dd[hh[mm[ss[.f{1,6}]]]]]] then an optional &zzxx offset.
fn date_time(v: &[u8]) -> bool {
    let digits = |b: &[u8]| b.iter().all(u8::is_ascii_digit);
    let n = v.len();
    let body = if n >= 5 && matches!(v[n - 5], b'+' | b'-') && digits(&v[n - 4..]) {
        &v[..n - 5]
    } else {
        v
    };
    let whole = body.iter().position(|&c| c == b'.').unwrap_or(body.len());
    let (date, rest) = body.split_at(whole);
    digits(date)
        && matches!(date.len(), 4 | 6 | 8 | 10 | 12 | 14)
        && (rest.is_empty() || (date.len() == 14 && fraction(rest)))
}

fn fraction(rest: &[u8]) -> bool {
    rest.is_empty()
        || (rest[0] == b'.'
            && (2..=7).contains(&rest.len())
            && rest[1..].iter().all(u8::is_ascii_digit))
}

pub fn norm(value: &str) -> &str {
    value.trim_matches([' ', '\0'])
}

pub fn uid_pseudonym(secret: &[u8], uid: &str) -> String {
    let d = mac(secret, &[b"dicomlake-uid-v1\x00", norm(uid).as_bytes()]);
    let mut b: [u8; 16] = d[..16].try_into().unwrap();
    b[6] = (b[6] & 0x0F) | 0x80;
    b[8] = (b[8] & 0x3F) | 0x80;
    format!("2.25.{}", u128::from_be_bytes(b))
}

pub fn text_pseudonym(secret: &[u8], keyword: &str, value: &str) -> String {
    let d = mac(
        secret,
        &[
            b"dicomlake-id-v1\x00",
            keyword.as_bytes(),
            b"\x00",
            norm(value).as_bytes(),
        ],
    );
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    // 16 characters: the first 80 bits
    let mut bits: u128 = 0;
    for &byte in &d[..10] {
        bits = (bits << 8) | byte as u128;
    }
    (0..16)
        .map(|i| ALPHABET[((bits >> (75 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// `deid.date_shift_days`: the (negative) days every date of a patient moves by.
pub fn date_shift_days(secret: &[u8], patient_key: &str, max_shift_days: u64) -> i64 {
    let d = mac(
        secret,
        &[b"dicomlake-dateshift-v1\x00", patient_key.as_bytes()],
    );
    let n = u64::from_be_bytes(d[..8].try_into().unwrap());
    -1 - (n % max_shift_days) as i64
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + if m <= 2 { 1 } else { 0 }, m, d)
}

fn valid_date(y: i64, m: i64, d: i64) -> bool {
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || d < 1 {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    d <= days[(m - 1) as usize]
}

/// `deid._shift`: a DA or DT value moved by `days`; None when the result would need a form
/// this port does not write exactly (years before 1000, non-ASCII).
pub fn shift(text: &str, is_da: bool, days: i64) -> Option<String> {
    if !text.is_ascii() {
        return None;
    }
    let compact: String = py_strip(text).replace('.', "");
    let b = compact.as_bytes();
    if b.len() < 8 || !b[..8].iter().all(u8::is_ascii_digit) {
        return Some(String::new());
    }
    let (y, m, d): (i64, i64, i64) = (
        compact[..4].parse().unwrap(),
        compact[4..6].parse().unwrap(),
        compact[6..8].parse().unwrap(),
    );
    if !valid_date(y, m, d) || (is_da && b.len() != 8) {
        return Some(String::new());
    }
    let (ny, nm, nd) = civil_from_days(days_from_civil(y, m, d) + days);
    if !(1..=9999).contains(&ny) {
        return Some(String::new());
    }
    if ny < 1000 {
        return None;
    }
    let rest = if is_da { "" } else { py_strip(text).get(8..)? };
    Some(format!("{ny:04}{nm:02}{nd:02}{rest}"))
}
