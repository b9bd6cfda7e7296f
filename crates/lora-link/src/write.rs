//! A `core::fmt::Write` over a caller's byte buffer: formatting without allocation.

use core::fmt;

/// The caller's buffer cannot hold the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferTooSmall;

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("buffer too small")
    }
}

/// Writes into `buf` from the start; `len` bytes written so far.
pub(crate) struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Cursor { buf, len: 0 }
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> Result<(), BufferTooSmall> {
        let end = self.len.checked_add(bytes.len()).ok_or(BufferTooSmall)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(BufferTooSmall)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Formats `args` (numbers, `{:.1}` floats) straight into the buffer.
    pub(crate) fn fmt(&mut self, args: fmt::Arguments<'_>) -> Result<(), BufferTooSmall> {
        fmt::Write::write_fmt(self, args).map_err(|_| BufferTooSmall)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes()).map_err(|_| fmt::Error)
    }
}
