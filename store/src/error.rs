//! Errors of the message store, kept apart by who must act: the caller (a request or a replay
//! that does not fit, see [`StoreError::is_fatal`]) or the operator (files that are not what the
//! store wrote).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What the store was doing when an I/O error happened (dledger's vocabulary, shared so that logs
/// of both layers read alike).
pub use dledger::error::Verb;

/// The file or directory an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A ConsumeQueue file.
    ConsumeQueueFile {
        /// The file's path (its name is the 20-digit starting byte offset of the queue).
        path: PathBuf,
    },
    /// An IndexFile.
    IndexFile {
        /// The file's path (its name is its creation timestamp).
        path: PathBuf,
    },
    /// A small metadata file, such as the list of ConsumeQueues.
    Meta {
        /// The file's path.
        path: PathBuf,
    },
    /// A directory.
    Dir {
        /// The directory's path.
        path: PathBuf,
    },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::ConsumeQueueFile { path } => write!(f, "ConsumeQueue({})", path.display()),
            Subject::IndexFile { path } => write!(f, "IndexFile({})", path.display()),
            Subject::Meta { path } => write!(f, "Meta({})", path.display()),
            Subject::Dir { path } => write!(f, "Dir({})", path.display()),
        }
    }
}

/// An error of the message store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An operating-system I/O error. A failed flush is never retried: the replica stops.
    #[error("when {verb:?} {subject}: {source}")]
    Io {
        /// What was being done.
        verb: Verb,
        /// To what.
        subject: Subject,
        /// The OS error (`InvalidData` for a file of the wrong size).
        source: io::Error,
    },
    /// Bytes in a file fail a structure check: the file is not what the store wrote.
    #[error("corrupt {} at byte {file_offset}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Offset of the bad record or field within the file.
        file_offset: u64,
        /// What check failed.
        reason: String,
    },
    /// A file whose name does not belong in a store directory.
    #[error("unexpected file {}: {reason}", path.display())]
    UnexpectedFile {
        /// The file.
        path: PathBuf,
        /// Why it does not fit.
        reason: String,
    },
    /// A file is missing between two files that exist.
    #[error("missing file {}: files before and after it exist", path.display())]
    MissingFile {
        /// The path the file should have.
        path: PathBuf,
    },
    /// An append to a ConsumeQueue at another queue offset than its next one. Queue offsets are
    /// dense: a replay must skip what is there and may not leave a hole.
    #[error(
        "ConsumeQueue {} expects queue offset {expected}, got {queue_offset}",
        dir.display()
    )]
    QueueOffsetGap {
        /// The queue's directory.
        dir: PathBuf,
        /// The offset appended at.
        queue_offset: u64,
        /// The queue's next offset.
        expected: u64,
    },
    /// A ConsumeQueue unit that cannot be stored (it would read back as invalid).
    #[error("invalid ConsumeQueue unit at queue offset {queue_offset}: {reason}")]
    InvalidUnit {
        /// The offset it was appended at.
        queue_offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A truncation below what the queue still holds.
    #[error(
        "cannot truncate ConsumeQueue {} to {queue_offset}: its first offset is {queue_offset_min}",
        dir.display()
    )]
    TruncateBelowMin {
        /// The queue's directory.
        dir: PathBuf,
        /// The offset asked for.
        queue_offset: u64,
        /// The first offset the queue holds.
        queue_offset_min: u64,
    },
    /// A topic name RocketMQ would refuse.
    #[error("invalid topic name {topic:?}: {reason}")]
    InvalidTopic {
        /// The name.
        topic: String,
        /// Why.
        reason: String,
    },
    /// A negative queue id.
    #[error("invalid queue id {queue_id}: must not be negative")]
    InvalidQueueId {
        /// The id.
        queue_id: i32,
    },
    /// A number too large for its on-disk field.
    #[error("{field} {value} is out of range, max {max}")]
    OutOfRange {
        /// Which value.
        field: &'static str,
        /// The value.
        value: u64,
        /// The largest value the field holds.
        max: u64,
    },
    /// A setting that cannot work.
    #[error("invalid setting {name} = {value}: {reason}")]
    InvalidConfig {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: u64,
        /// The rule it breaks.
        reason: &'static str,
    },
}

impl StoreError {
    pub(crate) fn io(verb: Verb, subject: Subject, source: io::Error) -> Self {
        StoreError::Io {
            verb,
            subject,
            source,
        }
    }

    /// Whether the replica must stop: its files failed or are not what it wrote. The other
    /// errors reject one call and leave the store as it was.
    pub fn is_fatal(&self) -> bool {
        match self {
            StoreError::Io { .. }
            | StoreError::Corrupt { .. }
            | StoreError::UnexpectedFile { .. }
            | StoreError::MissingFile { .. } => true,
            StoreError::QueueOffsetGap { .. }
            | StoreError::InvalidUnit { .. }
            | StoreError::TruncateBelowMin { .. }
            | StoreError::InvalidTopic { .. }
            | StoreError::InvalidQueueId { .. }
            | StoreError::OutOfRange { .. }
            | StoreError::InvalidConfig { .. } => false,
        }
    }
}
