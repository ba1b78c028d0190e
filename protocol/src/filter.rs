//! TAG subscription expressions: `*` (or empty) takes everything, `a || b` takes messages
//! tagged `a` or `b`. The broker filters by the tags hash in the consume queue; the string
//! compare after it settles hash collisions (PROTOCOL.md §3.4).

use std::collections::BTreeSet;

use crate::message::java_string_hash;

/// A parsed TAG expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    /// Every message.
    All,
    /// Messages whose tag is one of these.
    Tags {
        /// The tags.
        tags: BTreeSet<String>,
        /// Their hashes.
        codes: BTreeSet<i64>,
    },
}

impl TagFilter {
    /// Parses `expression`.
    pub fn parse(expression: &str) -> TagFilter {
        let expression = expression.trim();
        if expression.is_empty() || expression == "*" {
            return TagFilter::All;
        }
        let tags: BTreeSet<String> = expression
            .split("||")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        if tags.is_empty() {
            return TagFilter::All;
        }
        let codes = tags
            .iter()
            .map(|t| i64::from(java_string_hash(t)))
            .collect();
        TagFilter::Tags { tags, codes }
    }

    /// Whether a consume-queue unit with `tags_code` may match.
    pub fn matches_code(&self, tags_code: i64) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags { codes, .. } => codes.contains(&tags_code),
        }
    }

    /// Whether a message with `tag` matches.
    pub fn matches_tag(&self, tag: Option<&str>) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags { tags, .. } => tag.is_some_and(|t| tags.contains(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions() {
        assert_eq!(TagFilter::parse(" * "), TagFilter::All);
        assert_eq!(TagFilter::parse(""), TagFilter::All);
        let filter = TagFilter::parse("TagA || TagB");
        assert!(filter.matches_code(2_598_919));
        assert!(
            !filter.matches_code(0),
            "untagged messages do not match a tag list"
        );
        assert!(filter.matches_tag(Some("TagB")));
        assert!(!filter.matches_tag(Some("TagC")));
        assert!(!filter.matches_tag(None));
    }
}
