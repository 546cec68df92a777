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
