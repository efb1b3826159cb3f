//! Frames on the wire: the checksums, the frame writer, and [`Receiver`],
//! which turns a byte stream into checked frames (docs/rs485.md, "Framing").
//!
//! The receiver owns two fixed buffers made once: taking a frame allocates
//! nothing. A frame it yields has passed every check of the reference's
//! section 1.5 (hex only, even length, a whole header, CHKSUM, LCHKSUM,
//! LENID equal to the INFO received); anything else is a [`Rejection`],
//! counted by kind.

/// The start of a frame (SOI).
pub const SOI: u8 = b'~';
/// The end of a frame (EOI).
pub const EOI: u8 = b'\r';
/// Characters of a frame without INFO, between SOI and EOI: VER, ADR, CID1,
/// CID2 (2 each), LENGTH (4) and CHKSUM (4).
pub const HEADER_CHARS: usize = 16;
/// LENID is 12 bits: at most 4095 characters of INFO.
pub const MAX_INFO_CHARS: usize = 0x0FFF;
/// The longest run of characters between SOI and EOI that can be a frame.
pub const MAX_BODY_CHARS: usize = HEADER_CHARS + MAX_INFO_CHARS;
/// The most INFO bytes a frame can carry.
pub const MAX_INFO: usize = MAX_INFO_CHARS / 2;

/// Why bytes did not make a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Bytes outside any frame (before a `~`), counted once per run.
    Garbage,
    /// A frame cut short: a new `~` arrived before its CR, or the caller
    /// gave up on it ([`Receiver::abandon`]).
    Partial,
    /// More characters than any frame can have before the CR.
    Oversized,
    /// A character that is not a hex digit between `~` and CR.
    NotHex,
    /// An odd number of characters, or too few for a header.
    Malformed,
    /// CHKSUM does not match the characters.
    Checksum,
    /// LCHKSUM does not match LENID.
    LengthChecksum,
    /// LENID differs from the INFO received.
    LengthMismatch,
}

impl Rejection {
    /// Every kind, in counter order.
    pub const ALL: [Rejection; 8] = [
        Rejection::Garbage,
        Rejection::Partial,
        Rejection::Oversized,
        Rejection::NotHex,
        Rejection::Malformed,
        Rejection::Checksum,
        Rejection::LengthChecksum,
        Rejection::LengthMismatch,
    ];

    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Rejection::Garbage => "garbage",
            Rejection::Partial => "partial",
            Rejection::Oversized => "oversized",
            Rejection::NotHex => "not_hex",
            Rejection::Malformed => "malformed",
            Rejection::Checksum => "checksum",
            Rejection::LengthChecksum => "length_checksum",
            Rejection::LengthMismatch => "length_mismatch",
        }
    }
}

/// How many times each [`Rejection`] happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RejectionCounts([u64; Rejection::ALL.len()]);

impl RejectionCounts {
    pub fn get(&self, kind: Rejection) -> u64 {
        self.0[kind as usize]
    }

    /// All kinds together.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    fn add(&mut self, kind: Rejection) {
        self.0[kind as usize] = self.0[kind as usize].saturating_add(1);
    }
}

/// One checked frame. For a response, `cid2` is the return code (RTN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub ver: u8,
    pub adr: u8,
    pub cid1: u8,
    pub cid2: u8,
    /// INFO, as bytes (the hex decoded).
    pub info: &'a [u8],
    /// The characters between `~` and CR as received (hex text, checksum
    /// included), for the recorder and for tests.
    pub raw: &'a [u8],
}

/// LENGTH for `info_chars` characters of INFO: LCHKSUM in the top nibble
/// (the negated sum of LENID's three nibbles, masked to 4 bits after
/// negating, the reference's first trap), LENID below.
pub fn length_field(info_chars: u16) -> u16 {
    let lenid = info_chars & 0x0FFF;
    let nibbles = (lenid & 0xF) + ((lenid >> 4) & 0xF) + (lenid >> 8);
    let lchksum = nibbles.wrapping_neg() & 0xF;
    (lchksum << 12) | lenid
}

/// CHKSUM of the characters after `~` and before the checksum: the 16-bit
/// two's complement of their byte sum modulo 65536 (not 65535: the
/// reference's second trap).
pub fn checksum(chars: &[u8]) -> u16 {
    chars
        .iter()
        .fold(0u16, |sum, &c| sum.wrapping_add(u16::from(c)))
        .wrapping_neg()
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Writes `value` as `digits` upper-case hex characters at `out[at..]`.
fn put_hex(out: &mut [u8], at: usize, value: u16, digits: usize) {
    for k in 0..digits {
        let shift = 4 * (digits - 1 - k);
        out[at + k] = HEX[usize::from((value >> shift) & 0xF)];
    }
}

/// The frame is longer than the buffer given, or its INFO longer than LENID allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a frame with {info} INFO bytes does not fit")]
pub struct TooLong {
    pub info: usize,
}

/// Characters a frame with `info` bytes of INFO takes on the wire, `~` and CR included.
pub fn frame_len(info: usize) -> usize {
    1 + HEADER_CHARS + 2 * info + 1
}

/// Writes a whole frame into `out` and returns its length. Private to the
/// codec: requests go through [`super::requests`] and responses through
/// [`super::responses::encode_response`], whose types cannot name 0x94 or 0x95.
pub(super) fn write_frame(out: &mut [u8], ver: u8, adr: u8, cid2: u8, info: &[u8]) -> Result<usize, TooLong> {
    let len = frame_len(info.len());
    if info.len() > MAX_INFO || out.len() < len {
        return Err(TooLong { info: info.len() });
    }
    out[0] = SOI;
    let body = &mut out[1..len - 1];
    for (k, byte) in [ver, adr, super::CID1_BATTERY, cid2].into_iter().enumerate() {
        put_hex(body, 2 * k, u16::from(byte), 2);
    }
    put_hex(body, 8, length_field(2 * info.len() as u16), 4);
    for (k, &byte) in info.iter().enumerate() {
        put_hex(body, 12 + 2 * k, u16::from(byte), 2);
    }
    let end = HEADER_CHARS - 4 + 2 * info.len();
    let chk = checksum(&body[..end]);
    put_hex(body, end, chk, 4);
    out[len - 1] = EOI;
    Ok(len)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Where the receiver is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for `~`; `junk` once a byte other than `~` was dropped.
    Hunting { junk: bool },
    /// Between `~` and CR.
    InFrame,
    /// Past the length bound: dropping bytes until `~` or CR.
    Discarding,
}

/// Turns bytes, as they arrive in any pieces, into checked frames.
///
/// Resynchronises on every `~` (a `~` inside a frame restarts it), bounds a
/// frame to [`MAX_BODY_CHARS`], and counts each rejection by kind. Two fixed
/// buffers (about 6 KiB) are made with it; no allocation afterwards.
#[derive(Debug, Clone)]
pub struct Receiver {
    chars: Box<[u8; MAX_BODY_CHARS]>,
    len: usize,
    bytes: Box<[u8; HEADER_CHARS / 2 + MAX_INFO]>,
    state: State,
    rejected: RejectionCounts,
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver::new()
    }
}

impl Receiver {
    pub fn new() -> Receiver {
        Receiver {
            chars: Box::new([0; MAX_BODY_CHARS]),
            len: 0,
            bytes: Box::new([0; HEADER_CHARS / 2 + MAX_INFO]),
            state: State::Hunting { junk: false },
            rejected: RejectionCounts::default(),
        }
    }

    /// The rejections so far, by kind.
    pub fn rejected(&self) -> RejectionCounts {
        self.rejected
    }

    /// Whether a frame has begun and not ended.
    pub fn in_frame(&self) -> bool {
        !matches!(self.state, State::Hunting { .. })
    }

    /// Gives up on what was received so far (the transaction's deadline
    /// passed, or a new request is about to be sent): an unfinished frame
    /// counts as [`Rejection::Partial`].
    pub fn abandon(&mut self) -> Option<Rejection> {
        let partial = match self.state {
            State::InFrame | State::Discarding => Some(self.reject(Rejection::Partial)),
            State::Hunting { .. } => None,
        };
        self.state = State::Hunting { junk: false };
        self.len = 0;
        partial
    }

    fn reject(&mut self, kind: Rejection) -> Rejection {
        self.rejected.add(kind);
        kind
    }

    /// Takes one byte; returns a frame or a rejection when the byte ends one.
    pub fn push(&mut self, byte: u8) -> Option<Result<Frame<'_>, Rejection>> {
        match (self.state, byte) {
            (State::Hunting { junk }, SOI) => {
                self.start();
                junk.then(|| Err(self.reject(Rejection::Garbage)))
            }
            (State::Hunting { .. }, _) => {
                self.state = State::Hunting { junk: true };
                None
            }
            (State::InFrame, SOI) => {
                self.start();
                Some(Err(self.reject(Rejection::Partial)))
            }
            (State::InFrame, EOI) => {
                self.state = State::Hunting { junk: false };
                Some(self.check())
            }
            (State::InFrame, _) if self.len == MAX_BODY_CHARS => {
                self.state = State::Discarding;
                Some(Err(self.reject(Rejection::Oversized)))
            }
            (State::InFrame, _) => {
                self.chars[self.len] = byte;
                self.len += 1;
                None
            }
            (State::Discarding, SOI) => {
                self.start();
                None
            }
            (State::Discarding, EOI) => {
                self.state = State::Hunting { junk: false };
                None
            }
            (State::Discarding, _) => None,
        }
    }

    fn start(&mut self) {
        self.state = State::InFrame;
        self.len = 0;
    }

    /// The checks of a whole frame, in the reference's order (§1.5 step 3-4).
    fn check(&mut self) -> Result<Frame<'_>, Rejection> {
        let n = self.len;
        let chars = &self.chars[..n];
        if !chars.iter().all(|&c| hex_value(c).is_some()) {
            return Err(self.reject(Rejection::NotHex));
        }
        let nibble = |at: usize| hex_value(chars[at]).unwrap_or(0);
        if !n.is_multiple_of(2) || n < HEADER_CHARS {
            return Err(self.reject(Rejection::Malformed));
        }
        let word = |at: usize| (at..at + 4).fold(0u16, |w, k| (w << 4) | u16::from(nibble(k)));
        if checksum(&chars[..n - 4]) != word(n - 4) {
            return Err(self.reject(Rejection::Checksum));
        }
        let length = word(8);
        if length_field(length & 0x0FFF) != length {
            return Err(self.reject(Rejection::LengthChecksum));
        }
        if usize::from(length & 0x0FFF) != n - HEADER_CHARS {
            return Err(self.reject(Rejection::LengthMismatch));
        }
        let count = (n - 4) / 2;
        for k in 0..count {
            self.bytes[k] = (nibble(2 * k) << 4) | nibble(2 * k + 1);
        }
        let b = &self.bytes[..count];
        Ok(Frame {
            ver: b[0],
            adr: b[1],
            cid1: b[2],
            cid2: b[3],
            info: &b[6..],
            raw: &self.chars[..n],
        })
    }
}
