//! Fixed-size integers of a dataset, in its byte order.

pub fn u16_at(data: &[u8], at: usize, little: bool) -> u16 {
    let b = [data[at], data[at + 1]];
    if little {
        u16::from_le_bytes(b)
    } else {
        u16::from_be_bytes(b)
    }
}

pub fn u32_at(data: &[u8], at: usize, little: bool) -> u32 {
    let b = [data[at], data[at + 1], data[at + 2], data[at + 3]];
    if little {
        u32::from_le_bytes(b)
    } else {
        u32::from_be_bytes(b)
    }
}
