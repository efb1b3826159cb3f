//! Reading a fuzzer's input piece by piece, shared by the fuzz targets.

/// The next `n` bytes of `data`, or `None` when fewer are left.
pub fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (head, tail) = data.split_at(n);
    *data = tail;
    Some(head)
}
