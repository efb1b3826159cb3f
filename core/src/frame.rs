//! A CAN frame as the core sees it, independent of any CAN library.
//!
//! The codec, the telegram assembly and the tests work on this type so that
//! the pure core never depends on SocketCAN; the CAN back-ends convert at the
//! edge.

use std::fmt;

/// An 11-bit standard or 29-bit extended CAN identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CanId {
    Standard(u16),
    Extended(u32),
}

impl CanId {
    /// The raw numeric identifier, whatever its format.
    pub fn raw(self) -> u32 {
        match self {
            CanId::Standard(id) => u32::from(id),
            CanId::Extended(id) => id,
        }
    }
}

/// Whether a frame carries data or is a remote-transmission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Data,
    Remote,
}

/// One classic CAN frame: at most 8 data bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub id: CanId,
    pub kind: FrameKind,
    len: u8,
    data: [u8; 8],
}

impl Frame {
    /// A standard-ID data frame. `data` longer than 8 bytes is cut to 8: the
    /// encoders never build more, and a CAN frame cannot carry more.
    pub fn standard(id: u16, data: &[u8]) -> Frame {
        Frame::new(CanId::Standard(id & 0x7FF), FrameKind::Data, data)
    }

    /// Any frame; `data` is cut to 8 bytes.
    pub fn new(id: CanId, kind: FrameKind, data: &[u8]) -> Frame {
        let len = data.len().min(8);
        let mut bytes = [0u8; 8];
        bytes[..len].copy_from_slice(&data[..len]);
        Frame {
            id,
            kind,
            len: len as u8,
            data: bytes,
        }
    }

    /// A remote frame with a data length code but no data.
    pub fn remote(id: CanId, dlc: u8) -> Frame {
        Frame {
            id,
            kind: FrameKind::Remote,
            len: dlc.min(8),
            data: [0; 8],
        }
    }

    /// The data bytes (empty for a remote frame's payload beyond its DLC).
    pub fn data(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }

    /// The data length code.
    pub fn dlc(&self) -> u8 {
        self.len
    }

    /// The payload as upper-case hex without separators, as candump prints it.
    pub fn hex(&self) -> String {
        self.data().iter().map(|b| format!("{b:02X}")).collect()
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.id, self.kind) {
            (CanId::Standard(id), FrameKind::Data) => write!(f, "{id:03X}#{}", self.hex()),
            (CanId::Extended(id), FrameKind::Data) => write!(f, "{id:08X}#{}", self.hex()),
            (id, FrameKind::Remote) => write!(f, "{:X}#R{}", id.raw(), self.len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_cut_to_eight_bytes() {
        let f = Frame::standard(0x351, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(f.data(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(f.dlc(), 8);
    }

    #[test]
    fn debug_prints_candump_style() {
        let f = Frame::standard(0x35C, &[0xC0, 0x00]);
        assert_eq!(format!("{f:?}"), "35C#C000");
        let e = Frame::new(CanId::Extended(0x1234567), FrameKind::Data, &[0xAB]);
        assert_eq!(format!("{e:?}"), "01234567#AB");
    }
}
