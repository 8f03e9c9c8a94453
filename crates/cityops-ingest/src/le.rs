//! Reading the little-endian fields of the spool's files, front to back.

/// The next `n` bytes, or `None` if fewer remain.
pub(crate) fn take<'a>(body: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if body.len() < n {
        return None;
    }
    let (head, rest) = body.split_at(n);
    *body = rest;
    Some(head)
}

/// The next two bytes as a number.
pub(crate) fn take_u16(body: &mut &[u8]) -> Option<u16> {
    take(body, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

/// The next four bytes as a number.
pub(crate) fn take_u32(body: &mut &[u8]) -> Option<u32> {
    take(body, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The next eight bytes as a number.
pub(crate) fn take_u64(body: &mut &[u8]) -> Option<u64> {
    take(body, 8).map(|b| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    })
}
