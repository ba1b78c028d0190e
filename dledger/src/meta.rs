//! Small metadata files (vote, committed, purged, membership), each replaced atomically and
//! durably, and checked with a CRC on read.
//!
//! Layout: magic `RMQM` (4), length of the payload (4, big-endian), bincode payload, CRC32C of
//! the payload (4).

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::disk::Disk;
use crate::error::{StorageError, Subject, Verb};
use crate::limits::META_FILE_BYTES_MAX;

const META_MAGIC: &[u8; 4] = b"RMQM";

/// Encodes a value for a metadata file.
///
/// # Panics
/// If the value cannot be serialized (our own types always can).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let payload = bincode::serialize(value).expect("metadata types serialize");
    let mut out = Vec::with_capacity(payload.len() + 12);
    out.extend_from_slice(META_MAGIC);
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .expect("small metadata")
            .to_be_bytes(),
    );
    out.extend_from_slice(&payload);
    out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    out
}

/// Decodes a metadata file's bytes.
///
/// # Errors
/// `CorruptMeta` naming the file and the failed check.
pub fn decode<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, StorageError> {
    let corrupt = |reason: &str| StorageError::CorruptMeta {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    if bytes.len() < 12 || bytes.len() > META_FILE_BYTES_MAX || &bytes[0..4] != META_MAGIC {
        return Err(corrupt("bad magic or size"));
    }
    let len = u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    if len + 12 != bytes.len() {
        return Err(corrupt("length field does not match the file size"));
    }
    let payload = &bytes[8..8 + len];
    let crc = u32::from_be_bytes(bytes[8 + len..].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(payload) {
        return Err(corrupt("CRC mismatch"));
    }
    bincode::deserialize(payload).map_err(|err| corrupt(&format!("undecodable: {err}")))
}

/// Reads a metadata file, `None` if absent.
///
/// # Errors
/// I/O errors, or a corrupt file.
pub fn load<D: Disk, T: DeserializeOwned>(
    disk: &D,
    path: &Path,
) -> Result<Option<T>, StorageError> {
    let bytes = disk.read_meta(path).map_err(|source| {
        StorageError::io(
            Verb::Read,
            Subject::Meta {
                path: path.to_path_buf(),
            },
            source,
        )
    })?;
    bytes.map(|bytes| decode(path, &bytes)).transpose()
}

/// Replaces a metadata file atomically and durably. Blocking.
///
/// # Errors
/// I/O errors.
pub fn store<D: Disk, T: Serialize>(disk: &D, path: &Path, value: &T) -> Result<(), StorageError> {
    disk.write_meta(path, &encode(value)).map_err(|source| {
        StorageError::io(
            Verb::Write,
            Subject::Meta {
                path: path.to_path_buf(),
            },
            source,
        )
    })
}
