//! `RemotingCommand` and its frame (PROTOCOL.md §1.2–1.6).
//!
//! ```text
//! int32 length (4 + header + body, not counting itself) | int32 type << 24 | header length
//! | header (JSON or ROCKETMQ binary) | body
//! ```
//!
//! Decoding is split in two so a server can keep a connection after a bad frame: [`split_frame`]
//! finds frame boundaries and fails only when the stream cannot be resynchronised (a length
//! over the cap or below the minimum), and [`RemotingCommand::decode`] decodes one frame and
//! reports the request's `opaque` when it got that far, so the error can be answered.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::code::{Language, SerializeType, VERSION};

mod json_header;

/// Largest frame, length prefix included (Java's `NettyDecoder` cap; clients use the same
/// one, so larger answers would be dropped by them too).
pub const FRAME_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Response flag bit (`1 << RPC_TYPE`).
pub const FLAG_RESPONSE: i32 = 1;
/// Oneway flag bit (`1 << RPC_ONEWAY`): no response is sent.
pub const FLAG_ONEWAY: i32 = 2;

/// The framing of the byte stream is lost: the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is over the cap; checked before any of it is buffered.
    #[error("frame of {length} bytes is over the {FRAME_MAX_BYTES}-byte limit")]
    TooLarge {
        /// The announced length, prefix included.
        length: u64,
    },
    /// The length prefix cannot even hold the header-length word.
    #[error("frame length {length} is below the 4-byte minimum")]
    TooShort {
        /// The announced length.
        length: i64,
    },
}

/// One frame could not be decoded; the stream is still in step, so the connection can go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed command: {reason}")]
pub struct DecodeError {
    /// The request's `opaque`, when the header got that far: the error can be answered.
    pub opaque: Option<i32>,
    /// Whether the command was a oneway request (then nothing may be answered).
    pub oneway: bool,
    /// What was wrong.
    pub reason: String,
}

impl DecodeError {
    fn new(reason: impl Into<String>) -> Self {
        DecodeError {
            opaque: None,
            oneway: false,
            reason: reason.into(),
        }
    }
}

/// A command could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("command of {bytes} bytes is over the {FRAME_MAX_BYTES}-byte frame limit")]
pub struct EncodeError {
    /// The size it would have had.
    pub bytes: usize,
}

/// Takes one whole frame (without its length prefix) off the front of `buf`, or `None` until
/// one has arrived. The length is checked against the cap from the 4 prefix bytes alone, and
/// room is reserved for exactly one frame.
///
/// # Errors
/// [`FrameError`] when the stream cannot be resynchronised.
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let length = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if length < 4 {
        return Err(FrameError::TooShort {
            length: i64::from(length),
        });
    }
    let length = length as usize;
    if length + 4 > FRAME_MAX_BYTES {
        return Err(FrameError::TooLarge {
            length: length as u64 + 4,
        });
    }
    if buf.len() < 4 + length {
        buf.reserve(4 + length - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(length).freeze()))
}

/// A request or response of RocketMQ's remoting protocol.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemotingCommand {
    /// Request code, or response code on a response.
    pub code: i32,
    /// The sender's language.
    pub language: Language,
    /// The sender's version (an `MQVersion` ordinal).
    pub version: i32,
    /// Request id, echoed by the response.
    pub opaque: i32,
    /// Bit 0 response, bit 1 oneway.
    pub flag: i32,
    /// Error text on responses.
    pub remark: Option<String>,
    /// The custom header's fields, as text.
    pub ext_fields: BTreeMap<String, String>,
    /// How the header was, or will be, serialized.
    pub serialize: SerializeType,
    /// The body.
    pub body: Bytes,
}

impl RemotingCommand {
    /// A request with `code` and header fields `ext`.
    pub fn request(code: i32, ext: BTreeMap<String, String>) -> Self {
        RemotingCommand {
            code,
            language: Language::Rust,
            version: VERSION,
            ext_fields: ext,
            ..Default::default()
        }
    }

    /// The response to `request` with `code`: same `opaque` and header serialization (ali-ons
    /// cannot read a binary header, PROTOCOL.md §1.4).
    pub fn response_to(request: &RemotingCommand, code: i32) -> Self {
        RemotingCommand {
            code,
            language: Language::Java,
            version: VERSION,
            opaque: request.opaque,
            flag: FLAG_RESPONSE,
            serialize: request.serialize,
            ..Default::default()
        }
    }

    /// Sets the remark.
    #[must_use]
    pub fn with_remark(mut self, remark: impl Into<String>) -> Self {
        self.remark = Some(remark.into());
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the header fields.
    #[must_use]
    pub fn with_ext(mut self, ext: BTreeMap<String, String>) -> Self {
        self.ext_fields = ext;
        self
    }

    /// Whether this is a response.
    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// Whether this is a oneway request (nothing is answered).
    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// Marks this request oneway.
    #[must_use]
    pub fn oneway(mut self) -> Self {
        self.flag |= FLAG_ONEWAY;
        self
    }

    /// Decodes one frame as returned by [`split_frame`].
    ///
    /// # Errors
    /// [`DecodeError`] naming what is wrong, with the `opaque` if it was read.
    pub fn decode(frame: &Bytes) -> Result<RemotingCommand, DecodeError> {
        if frame.len() < 4 {
            return Err(DecodeError::new(
                "frame shorter than its header-length word",
            ));
        }
        let word = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let serialize = SerializeType::from_code((word >> 24) as u8)
            .ok_or_else(|| DecodeError::new(format!("unknown serialize type {}", word >> 24)))?;
        let header_len = (word & 0x00FF_FFFF) as usize;
        if header_len > frame.len() - 4 {
            return Err(DecodeError::new(format!(
                "header length {header_len} exceeds the {} bytes after it",
                frame.len() - 4
            )));
        }
        let header = &frame[4..4 + header_len];
        let mut command = match serialize {
            SerializeType::Json => json_header::decode(header)?,
            SerializeType::RocketMq => decode_binary_header(header)?,
        };
        command.serialize = serialize;
        command.body = frame.slice(4 + header_len..);
        Ok(command)
    }

    /// Appends the whole frame, length prefix included, to `out`.
    ///
    /// # Errors
    /// [`EncodeError`] if the frame would pass [`FRAME_MAX_BYTES`]; nothing is written then.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let header = match self.serialize {
            SerializeType::Json => self.encode_json_header().into_bytes(),
            SerializeType::RocketMq => self.encode_binary_header(),
        };
        let total = 4 + 4 + header.len() + self.body.len();
        if total > FRAME_MAX_BYTES {
            return Err(EncodeError { bytes: total });
        }
        out.reserve(total);
        out.put_u32((total - 4) as u32);
        out.put_u32((u32::from(self.serialize.code()) << 24) | header.len() as u32);
        out.put_slice(&header);
        out.put_slice(&self.body);
        Ok(())
    }

    /// The frame as one buffer.
    ///
    /// # Errors
    /// As [`RemotingCommand::encode`].
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.freeze())
    }

    /// Java's layout: keys in alphabetical order, `extFields` always present with text values,
    /// `remark` only when set, `serializeTypeCurrentRPC` always (rocketmq-client-rust needs it).
    fn encode_json_header(&self) -> String {
        let mut out = String::with_capacity(160 + 32 * self.ext_fields.len());
        out.push_str("{\"code\":");
        let _ = write!(out, "{}", self.code);
        out.push_str(",\"extFields\":{");
        for (i, (key, value)) in self.ext_fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(&mut out, key);
            out.push(':');
            push_json_string(&mut out, value);
        }
        out.push_str("},\"flag\":");
        let _ = write!(out, "{}", self.flag);
        out.push_str(",\"language\":\"");
        out.push_str(self.language.name());
        out.push_str("\",\"opaque\":");
        let _ = write!(out, "{}", self.opaque);
        if let Some(remark) = &self.remark {
            out.push_str(",\"remark\":");
            push_json_string(&mut out, remark);
        }
        out.push_str(",\"serializeTypeCurrentRPC\":\"");
        out.push_str(self.serialize.name());
        out.push_str("\",\"version\":");
        let _ = write!(out, "{}", self.version);
        out.push('}');
        out
    }

    fn encode_binary_header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.put_i16(self.code as i16);
        out.put_u8(self.language.code());
        out.put_i16(self.version as i16);
        out.put_i32(self.opaque);
        out.put_i32(self.flag);
        match &self.remark {
            Some(remark) => {
                out.put_i32(remark.len() as i32);
                out.put_slice(remark.as_bytes());
            }
            None => out.put_i32(0),
        }
        let mut ext = Vec::new();
        for (key, value) in &self.ext_fields {
            ext.put_i16(key.len() as i16);
            ext.put_slice(key.as_bytes());
            ext.put_i32(value.len() as i32);
            ext.put_slice(value.as_bytes());
        }
        out.put_i32(ext.len() as i32);
        out.put_slice(&ext);
        out
    }
}

/// Appends `value` as a JSON string: quotes, backslashes and control characters (`\u0001`,
/// `\u0002` in properties) escaped as serde_json escapes them, other text as raw UTF-8, as
/// fastjson writes it.
fn push_json_string(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(value.len() + 2);
    out.push('"');
    let mut plain = 0;
    for (i, byte) in value.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&value[plain..i]);
        plain = i + 1;
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escape);
        }
    }
    out.push_str(&value[plain..]);
    out.push('"');
}

/// Reads `n` bytes of `header` at `*at`, advancing it.
fn take<'a>(header: &'a [u8], at: &mut usize, n: usize, what: &str) -> Result<&'a [u8], String> {
    let end = at
        .checked_add(n)
        .filter(|end| *end <= header.len())
        .ok_or_else(|| {
            format!(
                "binary header ends inside {what} ({n} bytes at {}, header is {})",
                *at,
                header.len()
            )
        })?;
    let bytes = &header[*at..end];
    *at = end;
    Ok(bytes)
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

fn decode_binary_header(header: &[u8]) -> Result<RemotingCommand, DecodeError> {
    const FIXED: usize = 2 + 1 + 2 + 4 + 4;
    if header.len() < FIXED {
        return Err(DecodeError::new(format!(
            "binary header of {} bytes is shorter than its {FIXED} fixed bytes",
            header.len()
        )));
    }
    let code = i16::from_be_bytes([header[0], header[1]]);
    let language = Language::from_code(header[2]);
    let version = i16::from_be_bytes([header[3], header[4]]);
    let opaque = i32::from_be_bytes([header[5], header[6], header[7], header[8]]);
    let flag = i32::from_be_bytes([header[9], header[10], header[11], header[12]]);
    let fail = |reason: String| DecodeError {
        opaque: Some(opaque),
        oneway: flag & FLAG_ONEWAY != 0,
        reason,
    };
    let mut at = FIXED;
    let read_i32 = |at: &mut usize, what: &str| -> Result<i32, String> {
        let b = take(header, at, 4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let remark_len = read_i32(&mut at, "the remark length").map_err(fail)?;
    let remark = if remark_len > 0 {
        let bytes = take(header, &mut at, remark_len as usize, "the remark").map_err(fail)?;
        Some(utf8(bytes, "remark").map_err(fail)?)
    } else if remark_len == 0 {
        None
    } else {
        return Err(fail(format!("negative remark length {remark_len}")));
    };
    let ext_len = read_i32(&mut at, "the extFields length").map_err(fail)?;
    if ext_len < 0 {
        return Err(fail(format!("negative extFields length {ext_len}")));
    }
    let ext = take(header, &mut at, ext_len as usize, "the extFields").map_err(fail)?;
    let mut ext_fields = BTreeMap::new();
    let mut pos = 0;
    while pos < ext.len() {
        let k = take(ext, &mut pos, 2, "a key length").map_err(fail)?;
        let key_len = i16::from_be_bytes([k[0], k[1]]);
        if key_len < 0 {
            return Err(fail(format!("negative key length {key_len}")));
        }
        let key = utf8(
            take(ext, &mut pos, key_len as usize, "a key").map_err(fail)?,
            "a key",
        )
        .map_err(fail)?;
        let v = take(ext, &mut pos, 4, "a value length").map_err(fail)?;
        let value_len = i32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        if value_len < 0 {
            return Err(fail(format!(
                "negative value length {value_len} for `{key}`"
            )));
        }
        let value = utf8(
            take(ext, &mut pos, value_len as usize, "a value").map_err(fail)?,
            "a value",
        )
        .map_err(fail)?;
        // Java reads a zero-length string as null, and null entries are skipped.
        if !key.is_empty() && !value.is_empty() {
            ext_fields.insert(key, value);
        }
    }
    if at != header.len() {
        return Err(fail(format!(
            "{} bytes after the binary header's extFields",
            header.len() - at
        )));
    }
    Ok(RemotingCommand {
        code: i32::from(code),
        language,
        version: i32::from(version),
        opaque,
        flag,
        remark,
        ext_fields,
        serialize: SerializeType::RocketMq,
        body: Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn frame_of(bytes: &[u8]) -> Bytes {
        let mut buf = BytesMut::from(bytes);
        split_frame(&mut buf).unwrap().unwrap()
    }

    /// The JSON example of PROTOCOL.md §1.2 decodes to what it says.
    #[test]
    fn decodes_the_java_json_example() {
        let header = br#"{"code":105,"extFields":{"topic":"TopicTest"},"flag":0,"language":"JAVA","opaque":0,"serializeTypeCurrentRPC":"JSON","version":479}"#;
        assert_eq!(header.len(), 131);
        let mut bytes = vec![0, 0, 0, 0x87, 0, 0, 0, 0x83];
        bytes.extend_from_slice(header);
        let command = RemotingCommand::decode(&frame_of(&bytes)).unwrap();
        assert_eq!(command.code, 105);
        assert_eq!(command.version, 479);
        assert_eq!(command.language, Language::Java);
        assert_eq!(command.ext_fields["topic"], "TopicTest");
        assert!(command.body.is_empty());
        assert!(!command.is_response() && !command.is_oneway());
    }

    /// The binary example of PROTOCOL.md §1.4, byte for byte, both ways.
    #[test]
    fn binary_header_matches_the_spec_bytes() {
        let bytes: Vec<u8> = [
            "0000002d",
            "01000029",
            "0069",
            "00",
            "01df",
            "00000000",
            "00000000",
            "00000000",
            "00000014",
            "0005",
            "746f706963",
            "00000009",
            "546f70696354657374",
        ]
        .concat()
        .as_bytes()
        .chunks(2)
        .map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap())
        .collect();
        let command = RemotingCommand::decode(&frame_of(&bytes)).unwrap();
        assert_eq!(command.code, 105);
        assert_eq!(command.serialize, SerializeType::RocketMq);
        assert_eq!(command.ext_fields["topic"], "TopicTest");
        assert_eq!(command.to_bytes().unwrap().as_ref(), bytes.as_slice());
    }

    /// The C++ client's header (PROTOCOL.md §7.1b): a newline after the object, ACL fields,
    /// an empty remark, language CPP, version 63.
    #[test]
    fn accepts_the_cpp_client_header() {
        let header = b"{\"code\":105,\"extFields\":{\"AccessKey\":\"\",\"OnsChannel\":\"ALIYUN\",\"Signature\":\"eliq9umFAInEW+Zgr3Gb5SIU0r0=\",\"topic\":\"DbgTopic1\"},\"flag\":0,\"language\":\"CPP\",\"opaque\":0,\"remark\":\"\",\"version\":63}\n";
        let mut frame = BytesMut::new();
        frame.put_u32(header.len() as u32);
        frame.put_slice(header);
        let command = RemotingCommand::decode(&frame.freeze()).unwrap();
        assert_eq!(command.language, Language::Cpp);
        assert_eq!(command.version, 63);
        assert_eq!(command.ext_fields["topic"], "DbgTopic1");
    }

    /// ali-ons sends numbers and booleans as extFields values and no serializeTypeCurrentRPC.
    #[test]
    fn ext_field_numbers_and_booleans_become_text() {
        let header = br#"{"code":11,"extFields":{"queueId":0,"sysFlag":6,"unitMode":false,"gone":null},"flag":0,"language":"JAVA","opaque":-7,"version":121}"#;
        let mut frame = BytesMut::new();
        frame.put_u32(header.len() as u32);
        frame.put_slice(header);
        let command = RemotingCommand::decode(&frame.freeze()).unwrap();
        assert_eq!(command.ext_fields["queueId"], "0");
        assert_eq!(command.ext_fields["unitMode"], "false");
        assert!(!command.ext_fields.contains_key("gone"));
        assert_eq!(command.opaque, -7);
    }

    /// Our JSON header has Java's key order and text-only ext values.
    #[test]
    fn json_header_has_java_key_order() {
        let request = RemotingCommand::request(310, BTreeMap::new());
        let mut ext = BTreeMap::new();
        ext.insert("queueId".to_string(), "1".to_string());
        ext.insert("msgId".to_string(), "AB".to_string());
        let response = RemotingCommand::response_to(&request, 0).with_ext(ext);
        assert_eq!(
            response.encode_json_header(),
            r#"{"code":0,"extFields":{"msgId":"AB","queueId":"1"},"flag":1,"language":"JAVA","opaque":0,"serializeTypeCurrentRPC":"JSON","version":479}"#
        );
    }

    /// A response keeps the request's opaque and serialize type.
    #[test]
    fn response_mirrors_the_request() {
        let mut request = RemotingCommand::request(34, BTreeMap::new());
        request.opaque = 42;
        request.serialize = SerializeType::RocketMq;
        let response = RemotingCommand::response_to(&request, 0);
        assert_eq!(response.opaque, 42);
        assert_eq!(response.serialize, SerializeType::RocketMq);
        assert!(response.is_response());
    }

    /// Properties with control characters survive a JSON round trip.
    #[test]
    fn round_trips_both_header_types() {
        for serialize in [SerializeType::Json, SerializeType::RocketMq] {
            let mut ext = BTreeMap::new();
            ext.insert("i".into(), "TAGS\u{1}a\u{2}KEYS\u{1}k 1\u{2}".into());
            ext.insert("b".into(), "主题".into());
            let mut command = RemotingCommand::request(310, ext)
                .with_body(&b"hello"[..])
                .with_remark("why \"not\"")
                .oneway();
            command.opaque = i32::MIN;
            command.serialize = serialize;
            let bytes = command.to_bytes().unwrap();
            let back = RemotingCommand::decode(&frame_of(&bytes)).unwrap();
            assert_eq!(back, command);
        }
    }

    /// A length over the cap is refused from the prefix alone, a partial frame waits.
    #[test]
    fn split_frame_checks_the_length_first() {
        let mut buf = BytesMut::from(&[0x01, 0x00, 0x00, 0x00][..]);
        assert_eq!(
            split_frame(&mut buf),
            Err(FrameError::TooLarge {
                length: 0x0100_0004
            })
        );
        let mut buf = BytesMut::from(&[0x00, 0x00, 0x00, 0x02, 1, 2][..]);
        assert!(matches!(
            split_frame(&mut buf),
            Err(FrameError::TooShort { length: 2 })
        ));
        let mut buf = BytesMut::from(&[0x00, 0x00, 0x00, 0x08, 0, 0][..]);
        assert_eq!(split_frame(&mut buf), Ok(None));
        assert_eq!(buf.len(), 6, "nothing consumed");
    }

    /// A bad header inside an intact frame is an error that names the problem and, when the
    /// opaque was read, carries it.
    #[test]
    fn malformed_headers_are_named() {
        let cases: [(&[u8], &str, Option<i32>); 4] = [
            (b"not json", "not JSON", None),
            (br#"{"opaque":5}"#, "no `code`", Some(5)),
            (
                br#"{"code":"x","opaque":9}"#,
                "not a 32-bit integer",
                Some(9),
            ),
            (
                br#"{"code":1,"opaque":1,"extFields":[1]}"#,
                "not an object",
                Some(1),
            ),
        ];
        for (header, needle, opaque) in cases {
            let mut frame = BytesMut::new();
            frame.put_u32(header.len() as u32);
            frame.put_slice(header);
            let err = RemotingCommand::decode(&frame.freeze()).unwrap_err();
            assert!(err.reason.contains(needle), "{err} lacks {needle}");
            assert_eq!(err.opaque, opaque);
        }
        let mut frame = BytesMut::new();
        frame.put_u32(0x0000_00ff);
        let err = RemotingCommand::decode(&frame.freeze()).unwrap_err();
        assert!(err.reason.contains("exceeds"), "{err}");
        let mut frame = BytesMut::new();
        frame.put_u32(0x0700_0000);
        let err = RemotingCommand::decode(&frame.freeze()).unwrap_err();
        assert!(err.reason.contains("serialize type 7"), "{err}");
    }

    /// An oversized command is refused when encoding, not sent.
    #[test]
    fn encode_refuses_oversized_frames() {
        let command =
            RemotingCommand::request(310, BTreeMap::new()).with_body(vec![0u8; FRAME_MAX_BYTES]);
        assert!(command.to_bytes().is_err());
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut buf = BytesMut::from(bytes.as_slice());
            while let Ok(Some(frame)) = split_frame(&mut buf) {
                let _ = RemotingCommand::decode(&frame);
            }
            let _ = RemotingCommand::decode(&Bytes::from(bytes));
        }

        /// Our JSON string escaping is serde_json's, byte for byte.
        #[test]
        fn json_strings_escape_as_serde_json_does(text in "\\PC*|[\\x00-\\x7f]*") {
            let mut out = String::new();
            push_json_string(&mut out, &text);
            proptest::prop_assert_eq!(out, serde_json::to_string(&text).unwrap());
        }

        /// Arbitrary binary headers never panic, whatever the declared lengths.
        #[test]
        fn arbitrary_binary_headers_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let mut frame = BytesMut::new();
            frame.put_u32(0x0100_0000 | bytes.len() as u32);
            frame.put_slice(&bytes);
            let _ = RemotingCommand::decode(&frame.freeze());
        }
    }
}
