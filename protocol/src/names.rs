//! RocketMQ's rule for topic and group names (Java's `Validators`, `TopicValidator`): 1 to 127
//! bytes for a topic, 1 to 255 for a group, of `[A-Za-z0-9%|_-]`. Such a name is also a safe
//! file name (no `/`, no `.`, so never `..`), which the store relies on.

use std::fmt;

/// Longest topic name, in bytes (`TopicValidator.TOPIC_MAX_LENGTH`).
pub const TOPIC_MAX_BYTES: usize = 127;

/// Longest group name, in bytes (`Validators.CHARACTER_MAX_LENGTH`).
pub const GROUP_MAX_BYTES: usize = 255;

/// What a topic or group name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A topic.
    Topic,
    /// A producer or consumer group.
    Group,
}

impl NameKind {
    /// Its longest name, in bytes.
    pub fn max_bytes(self) -> usize {
        match self {
            NameKind::Topic => TOPIC_MAX_BYTES,
            NameKind::Group => GROUP_MAX_BYTES,
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Topic => "topic",
            NameKind::Group => "group",
        })
    }
}

/// Which part of the rule a name breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("the {kind} name is empty")]
    Empty {
        /// Topic or group.
        kind: NameKind,
    },
    /// The name is too long.
    #[error("the {kind} name is {len} bytes, longer than {}", kind.max_bytes())]
    TooLong {
        /// Topic or group.
        kind: NameKind,
        /// Its length in bytes.
        len: usize,
    },
    /// The name has a character outside the allowed set.
    #[error("the {kind} name {name:?} contains {bad:?}; allowed: [%|a-zA-Z0-9_-]")]
    BadChar {
        /// Topic or group.
        kind: NameKind,
        /// The name.
        name: String,
        /// The first character not allowed.
        bad: char,
    },
}

/// Checks `name` as a name of `kind`.
///
/// # Errors
/// The part of the rule it breaks.
pub fn check(kind: NameKind, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > kind.max_bytes() {
        return Err(NameError::TooLong {
            kind,
            len: name.len(),
        });
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-')))
    {
        return Err(NameError::BadChar {
            kind,
            name: name.to_string(),
            bad,
        });
    }
    Ok(())
}

/// Checks a topic name.
///
/// # Errors
/// The part of the rule it breaks.
pub fn check_topic(topic: &str) -> Result<(), NameError> {
    check(NameKind::Topic, topic)
}

/// Checks a group name.
///
/// # Errors
/// The part of the rule it breaks.
pub fn check_group(group: &str) -> Result<(), NameError> {
    check(NameKind::Group, group)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retry and DLQ names pass; empty, too long, path tricks and other characters fail, each
    /// naming what is wrong.
    #[test]
    fn names_follow_rocketmq_rule() {
        for good in [
            "TopicA",
            "%RETRY%group",
            "%DLQ%g-1",
            "a|b",
            "_",
            &"x".repeat(127),
        ] {
            check_topic(good).unwrap();
        }
        assert_eq!(
            check_topic(""),
            Err(NameError::Empty {
                kind: NameKind::Topic
            })
        );
        assert_eq!(
            check_topic(&"x".repeat(128)),
            Err(NameError::TooLong {
                kind: NameKind::Topic,
                len: 128
            })
        );
        check_group(&"g".repeat(255)).unwrap();
        assert!(check_group(&"g".repeat(256)).is_err());
        for bad in ["a/b", "..", ".", "a b", "tópico", "a\0"] {
            let err = check_topic(bad).unwrap_err();
            assert!(matches!(err, NameError::BadChar { .. }), "{bad:?}: {err}");
            assert!(err.to_string().contains("allowed"), "{err}");
        }
    }

    proptest::proptest! {
        /// Any string is either a valid name or refused with a reason, never a panic; a valid
        /// topic name is a safe single path component.
        #[test]
        fn any_name_is_judged(name in ".{0,200}") {
            if check_topic(&name).is_ok() {
                proptest::prop_assert!(!name.contains('/') && !name.contains('.'));
                proptest::prop_assert!(!name.is_empty() && name.len() <= TOPIC_MAX_BYTES);
            }
            let _ = check_group(&name);
        }
    }
}
