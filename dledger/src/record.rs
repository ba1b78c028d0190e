//! The byte layout of entries in segment files and of units in index files.
//!
//! Entry (big-endian), `ENTRY_HEADER_BYTES` = 48 then the body:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 4 | magic (`ENTRY_MAGIC`) |
//! | 4  | 4 | total size, header included |
//! | 8  | 8 | Raft index |
//! | 16 | 8 | Raft term |
//! | 24 | 8 | position: the entry's global byte position in the CommitLog |
//! | 32 | 1 | kind (normal, blank, membership), then 3 zero bytes |
//! | 36 | 4 | CRC32C of the body |
//! | 40 | 4 | CRC32C of bytes 0..40 of the header |
//! | 44 | 4 | zero |
//!
//! DLedger leaves its CRC fields unset; ours are always written and always checked. The header
//! has its own CRC so a flipped bit in the index or term is caught too, not only in the body.
//!
//! Index unit (big-endian), `INDEX_UNIT_BYTES` = 32, unit `i` at byte `i * 32`:
//! index (8), term (8), position (8), total size (4), CRC32C of the first 28 bytes (4).

use crate::limits::{ENTRY_HEADER_BYTES, INDEX_UNIT_BYTES};

/// Marks the start of an entry.
pub const ENTRY_MAGIC: u32 = 0xD1ED_6E12;
/// Marks the unused end of a segment: the next entry starts in the next segment.
pub const SEGMENT_END_MAGIC: u32 = 0xE0F5_E6E0;

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    /// Application bytes.
    Normal = 1,
    /// A leader's no-op.
    Blank = 2,
    /// A membership change (bincode of openraft's membership).
    Membership = 3,
}

impl EntryKind {
    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(EntryKind::Normal),
            2 => Some(EntryKind::Blank),
            3 => Some(EntryKind::Membership),
            _ => None,
        }
    }
}

/// The decoded header of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    /// Header plus body bytes.
    pub total_bytes: u32,
    /// Raft index.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// Global byte position.
    pub position: u64,
    /// Payload kind.
    pub kind: EntryKind,
    /// CRC32C of the body.
    pub body_crc: u32,
}

impl EntryHeader {
    /// Body bytes.
    pub fn body_bytes(&self) -> u32 {
        self.total_bytes - ENTRY_HEADER_BYTES
    }

    /// Writes the header for `body` into `out`.
    pub fn encode(&self, out: &mut [u8; ENTRY_HEADER_BYTES as usize]) {
        out.fill(0);
        out[0..4].copy_from_slice(&ENTRY_MAGIC.to_be_bytes());
        out[4..8].copy_from_slice(&self.total_bytes.to_be_bytes());
        out[8..16].copy_from_slice(&self.index.to_be_bytes());
        out[16..24].copy_from_slice(&self.term.to_be_bytes());
        out[24..32].copy_from_slice(&self.position.to_be_bytes());
        out[32] = self.kind as u8;
        out[36..40].copy_from_slice(&self.body_crc.to_be_bytes());
        let header_crc = crc32c::crc32c(&out[0..40]);
        out[40..44].copy_from_slice(&header_crc.to_be_bytes());
    }
}

/// Why bytes are not a valid header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderProblem {
    /// All zero: never written (the end of the log).
    Zero,
    /// The segment-end marker.
    SegmentEnd,
    /// Anything else, with the reason.
    Invalid(String),
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("slice of 4 bytes"))
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("slice of 8 bytes"))
}

/// Decodes and checks a header. `body_bytes_max` bounds the size field.
///
/// # Errors
/// The problem, if the bytes are not a valid entry header.
pub fn decode_header(
    bytes: &[u8; ENTRY_HEADER_BYTES as usize],
    body_bytes_max: u32,
) -> Result<EntryHeader, HeaderProblem> {
    let magic = be_u32(bytes, 0);
    if magic == SEGMENT_END_MAGIC {
        return Err(HeaderProblem::SegmentEnd);
    }
    if magic != ENTRY_MAGIC {
        if bytes.iter().all(|&b| b == 0) {
            return Err(HeaderProblem::Zero);
        }
        return Err(HeaderProblem::Invalid(format!("bad magic {magic:#010x}")));
    }
    let header_crc = be_u32(bytes, 40);
    let computed = crc32c::crc32c(&bytes[0..40]);
    if header_crc != computed {
        return Err(HeaderProblem::Invalid(format!(
            "header CRC mismatch: stored {header_crc:#010x}, computed {computed:#010x}"
        )));
    }
    let total_bytes = be_u32(bytes, 4);
    if total_bytes < ENTRY_HEADER_BYTES || total_bytes - ENTRY_HEADER_BYTES > body_bytes_max {
        return Err(HeaderProblem::Invalid(format!(
            "entry size {total_bytes} out of range"
        )));
    }
    let Some(kind) = EntryKind::from_u8(bytes[32]) else {
        return Err(HeaderProblem::Invalid(format!(
            "unknown entry kind {}",
            bytes[32]
        )));
    };
    Ok(EntryHeader {
        total_bytes,
        index: be_u64(bytes, 8),
        term: be_u64(bytes, 16),
        position: be_u64(bytes, 24),
        kind,
        body_crc: be_u32(bytes, 36),
    })
}

/// One unit of the index files: where entry `index` lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexUnit {
    /// Raft index.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// Global byte position of the entry.
    pub position: u64,
    /// Header plus body bytes.
    pub total_bytes: u32,
}

impl IndexUnit {
    /// Encodes the unit with its CRC.
    pub fn encode(&self) -> [u8; INDEX_UNIT_BYTES as usize] {
        let mut out = [0u8; INDEX_UNIT_BYTES as usize];
        out[0..8].copy_from_slice(&self.index.to_be_bytes());
        out[8..16].copy_from_slice(&self.term.to_be_bytes());
        out[16..24].copy_from_slice(&self.position.to_be_bytes());
        out[24..28].copy_from_slice(&self.total_bytes.to_be_bytes());
        let crc = crc32c::crc32c(&out[0..28]);
        out[28..32].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes a unit, or `None` if it is unwritten or fails its CRC.
    pub fn decode(bytes: &[u8; INDEX_UNIT_BYTES as usize]) -> Option<IndexUnit> {
        let crc = be_u32(bytes, 28);
        if crc != crc32c::crc32c(&bytes[0..28]) || bytes.iter().all(|&b| b == 0) {
            return None;
        }
        Some(IndexUnit {
            index: be_u64(bytes, 0),
            term: be_u64(bytes, 8),
            position: be_u64(bytes, 16),
            total_bytes: be_u32(bytes, 24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header survives an encode/decode round trip, and any flipped bit is caught.
    #[test]
    fn header_round_trip_and_every_bit_flip_is_caught() {
        let header = EntryHeader {
            total_bytes: ENTRY_HEADER_BYTES + 10,
            index: 7,
            term: 3,
            position: 4096,
            kind: EntryKind::Normal,
            body_crc: crc32c::crc32c(b"0123456789"),
        };
        let mut bytes = [0u8; ENTRY_HEADER_BYTES as usize];
        header.encode(&mut bytes);
        assert_eq!(decode_header(&bytes, 1024), Ok(header));
        for bit in 0..(44 * 8) {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_header(&flipped, 1024).is_err(),
                "flip of bit {bit} not caught"
            );
        }
    }

    /// Zeroed bytes read as the end of the log, not as corruption.
    #[test]
    fn zero_header_is_end_of_log() {
        let bytes = [0u8; ENTRY_HEADER_BYTES as usize];
        assert_eq!(decode_header(&bytes, 1024), Err(HeaderProblem::Zero));
    }

    /// An index unit round-trips, and a flipped bit or a zero unit decodes as absent.
    #[test]
    fn index_unit_round_trip_and_corruption() {
        let unit = IndexUnit {
            index: 9,
            term: 2,
            position: 1 << 40,
            total_bytes: 1072,
        };
        let bytes = unit.encode();
        assert_eq!(IndexUnit::decode(&bytes), Some(unit));
        let mut flipped = bytes;
        flipped[5] ^= 0x10;
        assert_eq!(IndexUnit::decode(&flipped), None);
        assert_eq!(IndexUnit::decode(&[0u8; 32]), None);
    }
}
