//! The Raft network: our own framed protocol over the transport seam.
//!
//! A frame is a 4-byte big-endian length, then that many bytes of bincode. The length is checked
//! against `RAFT_FRAME_BYTES_MAX` before any buffer grows. A connection opens with one hello
//! byte saying what it carries:
//! - `HELLO_RPC`: request/response pairs, one at a time (vote, pre-vote, append, snapshot
//!   parts, leadership transfer);
//! - `HELLO_STREAM`: a pipelined stream of AppendEntries requests one way and their results the
//!   other way, in order; the sender keeps up to `STREAM_IN_FLIGHT_MAX` requests in flight.

pub mod client;
pub mod server;

use std::io;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::limits::RAFT_FRAME_BYTES_MAX;
use crate::raft_types::{OrSnapshotMeta, OrVote, TypeConfig};

/// First byte of a connection carrying request/response RPCs.
pub const HELLO_RPC: u8 = 0x52;
/// First byte of a connection carrying one replication stream.
pub const HELLO_STREAM: u8 = 0x53;

type AppendRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
type AppendResponse = openraft::raft::AppendEntriesResponse<TypeConfig>;
type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
type VoteResponse = openraft::raft::VoteResponse<TypeConfig>;
type StreamResult = openraft::raft::StreamAppendResult<TypeConfig>;
type SnapshotResponse = openraft::raft::SnapshotResponse<TypeConfig>;
type TransferRequest = openraft::raft::TransferLeaderRequest<TypeConfig>;
type TransferResponse = openraft::raft::TransferLeaderResponse<TypeConfig>;

/// A request on an RPC connection.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcRequest {
    /// RequestVote.
    Vote(VoteRequest),
    /// Pre-vote round.
    PreVote(VoteRequest),
    /// One AppendEntries.
    Append(AppendRequest),
    /// One part of a snapshot, sent in order on one connection: bytes `offset..offset +
    /// data.len()` of `total`. The receiver installs it once the last part arrives.
    Snapshot {
        /// The leader's vote.
        vote: OrVote,
        /// Snapshot metadata.
        meta: OrSnapshotMeta,
        /// Where this part starts.
        offset: u64,
        /// Bytes of the whole snapshot.
        total: u64,
        /// This part's bytes (at most `SNAPSHOT_CHUNK_BYTES`).
        data: Vec<u8>,
    },
    /// Ask the receiver to take over leadership.
    TransferLeader(TransferRequest),
    /// The members of the receiver's group, if it has started (at its own start, a replica
    /// without a log asks its peers: one that a running group does not count as a member waits
    /// to be added instead of starting a group of its own).
    Probe,
}

/// The answer to an `RpcRequest`; `Err` carries the remote's error text.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcResponse {
    /// To `Vote` and `PreVote`.
    Vote(Result<VoteResponse, String>),
    /// To `Append`.
    Append(Result<AppendResponse, String>),
    /// To the last part of a `Snapshot`.
    Snapshot(Result<SnapshotResponse, String>),
    /// To a part of a `Snapshot` before its last.
    SnapshotPart(Result<(), String>),
    /// To `TransferLeader`.
    TransferLeader(Result<TransferResponse, String>),
    /// To `Probe`: the node ids of the receiver's membership (voters and learners), `None` if
    /// its group has not started.
    Probe(Option<Vec<u64>>),
}

/// One item flowing back on a replication stream.
#[derive(Debug, Serialize, Deserialize)]
pub enum StreamItem {
    /// The result of the next request in order.
    Result(StreamResult),
    /// The receiver's Raft stopped; the stream ends.
    Fatal(String),
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// The length prefix is over the bound; nothing was buffered.
    #[error("frame of {size} bytes exceeds the maximum {max}")]
    TooLarge {
        /// Announced size.
        size: u32,
        /// The bound.
        max: u32,
    },
    /// The frame's bytes do not decode.
    #[error("undecodable frame: {0}")]
    Decode(String),
    /// I/O error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one frame and decodes it.
///
/// # Errors
/// `Closed` at a clean end of stream, `TooLarge` before buffering an oversized frame, decode
/// and I/O errors.
pub async fn read_frame<R, T>(reader: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(err) => return Err(FrameError::Io(err)),
    }
    let size = u32::from_be_bytes(len);
    if size > RAFT_FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge {
            size,
            max: RAFT_FRAME_BYTES_MAX,
        });
    }
    let mut buf = vec![0u8; size as usize];
    reader.read_exact(&mut buf).await?;
    bincode::deserialize(&buf).map_err(|err| FrameError::Decode(err.to_string()))
}

/// Encodes a value as one frame (length prefix included).
///
/// # Errors
/// `TooLarge` if the encoding passes the frame bound.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let size =
        bincode::serialized_size(value).map_err(|err| FrameError::Decode(err.to_string()))?;
    if size > u64::from(RAFT_FRAME_BYTES_MAX) {
        return Err(FrameError::TooLarge {
            size: u32::try_from(size).unwrap_or(u32::MAX),
            max: RAFT_FRAME_BYTES_MAX,
        });
    }
    let mut out = Vec::with_capacity(size as usize + 4);
    out.extend_from_slice(&(size as u32).to_be_bytes());
    bincode::serialize_into(&mut out, value).map_err(|err| FrameError::Decode(err.to_string()))?;
    Ok(out)
}

/// Writes one frame.
///
/// # Errors
/// Encoding and I/O errors.
pub async fn write_frame<W, T>(writer: &mut W, value: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let bytes = encode_frame(value)?;
    writer.write_all(&bytes).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A length prefix over the bound is refused from the 4 prefix bytes alone: no body is
    /// awaited and nothing is buffered.
    #[tokio::test]
    async fn oversized_frame_is_refused_before_buffering() {
        let prefix = (RAFT_FRAME_BYTES_MAX + 1).to_be_bytes();
        let mut reader: &[u8] = &prefix;
        let err = read_frame::<_, RpcRequest>(&mut reader).await.unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { size, .. } if size == RAFT_FRAME_BYTES_MAX + 1)
        );
    }

    /// A clean end of stream between frames is `Closed`; inside a frame it is an I/O error.
    #[tokio::test]
    async fn end_of_stream_between_and_inside_frames() {
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read_frame::<_, RpcRequest>(&mut empty).await,
            Err(FrameError::Closed)
        ));
        let mut partial: &[u8] = &[0, 0, 0, 10, 1, 2];
        assert!(matches!(
            read_frame::<_, RpcRequest>(&mut partial).await,
            Err(FrameError::Io(_))
        ));
    }

    /// Bytes that are not a request decode to an error, not a panic.
    #[tokio::test]
    async fn garbage_frame_is_a_decode_error() {
        let mut frame = vec![0, 0, 0, 8];
        frame.extend_from_slice(&[0xff; 8]);
        let mut reader: &[u8] = &frame;
        assert!(matches!(
            read_frame::<_, RpcRequest>(&mut reader).await,
            Err(FrameError::Decode(_))
        ));
    }

    /// What we encode, we decode.
    #[tokio::test]
    async fn frames_round_trip() {
        let item = StreamItem::Fatal("stopped".into());
        let bytes = encode_frame(&item).unwrap();
        let mut reader: &[u8] = &bytes;
        let back: StreamItem = read_frame(&mut reader).await.unwrap();
        assert!(matches!(back, StreamItem::Fatal(reason) if reason == "stopped"));
    }
}
