//! Decoding the JSON header (PROTOCOL.md §1.2) in one pass, without building a JSON tree.
//!
//! Every send and every answer carries one of these headers, so they are read straight into
//! the command's fields: a `serde_json::Value` tree first and copies out of it afterwards took
//! about a tenth of the CPU of a produce benchmark (client and broker together). Leniency is
//! the same as before: unknown keys ignored, missing ones defaulted (but `code`), `extFields`
//! values that are numbers or booleans turned into text (ali-ons), numbers sent as strings
//! accepted, and for duplicate keys the last one wins.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{DecodeError, FLAG_ONEWAY, RemotingCommand};
use crate::code::{Language, SerializeType};

/// The JSON header, leniently; trailing whitespace and NULs accepted (the C++ client ends its
/// header with a newline).
pub(super) fn decode(header: &[u8]) -> Result<RemotingCommand, DecodeError> {
    let end = header
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0))
        .map_or(0, |i| i + 1);
    let RawHeaderOrNot(raw) = serde_json::from_slice(&header[..end])
        .map_err(|err| DecodeError::new(format!("header is not JSON: {err}")))?;
    let raw = raw.ok_or_else(|| DecodeError::new("header is not a JSON object"))?;
    // The opaque and flag first, so that later errors can be answered.
    let opaque = int(&raw.opaque, "opaque").map_err(DecodeError::new)?;
    let flag = int(&raw.flag, "flag")
        .map_err(DecodeError::new)?
        .unwrap_or(0);
    let fail = |reason: String| DecodeError {
        opaque,
        oneway: flag & FLAG_ONEWAY != 0,
        reason,
    };
    let code = int(&raw.code, "code")
        .map_err(fail)?
        .ok_or_else(|| fail("header has no `code`".into()))?;
    let version = int(&raw.version, "version").map_err(fail)?.unwrap_or(0);
    let language = match &raw.language {
        Loose::String(name) => Language::from_name(name),
        Loose::Number(n) => {
            Language::from_code(n.as_u64().and_then(|v| u8::try_from(v).ok()).unwrap_or(7))
        }
        _ => Language::Other,
    };
    let remark = match raw.remark {
        Loose::Null => None,
        Loose::String(s) => Some(s),
        other => Some(other.to_string()),
    };
    let ext_fields = match raw.ext_fields {
        ExtFields::Absent => BTreeMap::new(),
        ExtFields::Map(fields) => fields,
        ExtFields::NotAnObject(other) => {
            return Err(fail(format!("`extFields` is not an object: {other}")));
        }
    };
    Ok(RemotingCommand {
        code,
        language,
        version,
        opaque: opaque.unwrap_or(0),
        flag,
        remark,
        ext_fields,
        serialize: SerializeType::Json,
        body: Bytes::new(),
    })
}

/// An integer field: a JSON number, or a string holding one (some clients quote them).
fn int(value: &Loose, field: &str) -> Result<Option<i32>, String> {
    match value {
        Loose::Null => Ok(None),
        Loose::Number(n) => n
            .as_i64()
            .and_then(|v| i32::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| format!("`{field}` is not a 32-bit integer: {n}")),
        Loose::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("`{field}` is not a 32-bit integer: {s:?}")),
        other => Err(format!("`{field}` is not a number: {other}")),
    }
}

/// One JSON value, kept as it came; absent and `null` are alike.
#[derive(Debug, Default)]
enum Loose {
    #[default]
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    /// An array or object: only ever named in an error or turned into text.
    Nested(serde_json::Value),
}

impl Loose {
    /// The value as an `extFields` text, or `None` for `null` (the key is dropped).
    fn into_text(self) -> Option<String> {
        match self {
            Loose::Null => None,
            Loose::String(s) => Some(s),
            other => Some(other.to_string()),
        }
    }
}

/// As JSON text.
impl fmt::Display for Loose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loose::Null => f.write_str("null"),
            Loose::Bool(b) => write!(f, "{b}"),
            Loose::Number(n) => write!(f, "{n}"),
            Loose::String(s) => write!(f, "{}", serde_json::Value::String(s.clone())),
            Loose::Nested(value) => write!(f, "{value}"),
        }
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Loose, E> {
        Ok(Loose::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Loose, E> {
        Ok(Loose::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Loose, D::Error> {
        Loose::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Loose, E> {
        Ok(Loose::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Loose, E> {
        Ok(Loose::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Loose, E> {
        Ok(Loose::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Loose, E> {
        // JSON has no NaN or infinity, so this is always a number.
        Ok(serde_json::Number::from_f64(v).map_or(Loose::Null, Loose::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose, E> {
        Ok(Loose::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Loose, E> {
        Ok(Loose::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Loose, A::Error> {
        serde_json::Value::deserialize(SeqAccessDeserializer::new(seq)).map(Loose::Nested)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Loose, A::Error> {
        serde_json::Value::deserialize(MapAccessDeserializer::new(map)).map(Loose::Nested)
    }
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

/// `extFields`: an object of texts, or something else to be refused.
#[derive(Debug, Default)]
enum ExtFields {
    #[default]
    Absent,
    Map(BTreeMap<String, String>),
    NotAnObject(Loose),
}

impl<'de> Deserialize<'de> for ExtFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExtFields;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ExtFields, A::Error> {
                let mut fields = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if let Some(text) = map.next_value::<Loose>()?.into_text() {
                        fields.insert(key, text);
                    } else {
                        fields.remove(&key);
                    }
                }
                Ok(ExtFields::Map(fields))
            }
            fn visit_unit<E: de::Error>(self) -> Result<ExtFields, E> {
                Ok(ExtFields::Absent)
            }
            fn visit_none<E: de::Error>(self) -> Result<ExtFields, E> {
                Ok(ExtFields::Absent)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ExtFields, E> {
                LooseVisitor.visit_bool(v).map(ExtFields::NotAnObject)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ExtFields, E> {
                LooseVisitor.visit_i64(v).map(ExtFields::NotAnObject)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ExtFields, E> {
                LooseVisitor.visit_u64(v).map(ExtFields::NotAnObject)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ExtFields, E> {
                LooseVisitor.visit_f64(v).map(ExtFields::NotAnObject)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExtFields, E> {
                LooseVisitor.visit_str(v).map(ExtFields::NotAnObject)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ExtFields, A::Error> {
                LooseVisitor.visit_seq(seq).map(ExtFields::NotAnObject)
            }
        }
        d.deserialize_any(V)
    }
}

/// The header's fields before they are checked, in whatever order they came.
#[derive(Debug, Default)]
struct RawHeader {
    code: Loose,
    opaque: Loose,
    flag: Loose,
    version: Loose,
    language: Loose,
    remark: Loose,
    ext_fields: ExtFields,
}

/// A top-level key; the ones we do not read are skipped unparsed.
enum Key {
    Code,
    Opaque,
    Flag,
    Version,
    Language,
    Remark,
    ExtFields,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "code" => Key::Code,
                    "opaque" => Key::Opaque,
                    "flag" => Key::Flag,
                    "version" => Key::Version,
                    "language" => Key::Language,
                    "remark" => Key::Remark,
                    "extFields" => Key::ExtFields,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// `Some` for an object, `None` for any other JSON value.
struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Option<RawHeader>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawHeader::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Code => raw.code = map.next_value()?,
                Key::Opaque => raw.opaque = map.next_value()?,
                Key::Flag => raw.flag = map.next_value()?,
                Key::Version => raw.version = map.next_value()?,
                Key::Language => raw.language = map.next_value()?,
                Key::Remark => raw.remark = map.next_value()?,
                Key::ExtFields => raw.ext_fields = map.next_value()?,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(raw))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// The top level of a header: `None` when it was not an object.
struct RawHeaderOrNot(Option<RawHeader>);

impl<'de> Deserialize<'de> for RawHeaderOrNot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TopVisitor).map(RawHeaderOrNot)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The one-pass decoder reads what a `serde_json::Value` reading reads.
    #[test]
    fn lenient_values_read_as_before() {
        let header = br#"{"code":"12","opaque":3,"flag":2,"version":1.5,"language":4,"remark":{"a":[1]},"extFields":{"k":"v","n":-1,"f":2.5,"b":true,"z":null,"o":{"x":1},"k2":"\u0001"},"extra":[{"deep":null}]}"#;
        let err = decode(header).unwrap_err();
        assert!(
            err.reason
                .contains("`version` is not a 32-bit integer: 1.5"),
            "{err}"
        );
        assert_eq!((err.opaque, err.oneway), (Some(3), true));

        let header = br#"{"code":"12","opaque":3,"language":4,"remark":{"a":[1]},"extFields":{"k":"v","n":-1,"f":2.5,"b":true,"z":null,"o":{"x":1},"k2":"\u0001"},"extra":[{"deep":null}]}"#;
        let command = decode(header).unwrap();
        assert_eq!(command.code, 12);
        assert_eq!(command.language, Language::from_code(4));
        assert_eq!(command.remark.as_deref(), Some(r#"{"a":[1]}"#));
        let fields: Vec<(&str, &str)> = command
            .ext_fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("b", "true"),
                ("f", "2.5"),
                ("k", "v"),
                ("k2", "\u{1}"),
                ("n", "-1"),
                ("o", r#"{"x":1}"#),
            ]
        );
    }

    /// Duplicate keys: the last one wins, a later `null` removes an ext field.
    #[test]
    fn duplicate_keys_keep_the_last() {
        let header = br#"{"code":1,"code":2,"extFields":{"a":"1","a":"2","b":"x","b":null}}"#;
        let command = decode(header).unwrap();
        assert_eq!(command.code, 2);
        assert_eq!(command.ext_fields.len(), 1);
        assert_eq!(command.ext_fields["a"], "2");
    }

    /// Anything but an object at the top is refused by name; broken JSON too.
    #[test]
    fn non_objects_are_refused() {
        for header in [&b"[1,2]"[..], b"7", b"\"x\"", b"null", b"true"] {
            let err = decode(header).unwrap_err();
            assert!(err.reason.contains("not a JSON object"), "{err}");
        }
        for header in [&b"{"[..], b"{\"code\":1,}", b"{\"code\":1} x", b""] {
            let err = decode(header).unwrap_err();
            assert!(err.reason.contains("not JSON"), "{err}");
        }
        let err = decode(br#"{"code":1,"opaque":4,"extFields":"text"}"#).unwrap_err();
        assert!(
            err.reason
                .contains(r#"`extFields` is not an object: "text""#),
            "{err}"
        );
        assert_eq!(err.opaque, Some(4));
    }
}
