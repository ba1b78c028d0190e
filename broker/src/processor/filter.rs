//! Which messages a subscription takes: RocketMQ's tag filter, or an SQL92 selector over the
//! message's properties (FEATURES-SPEC.md §5), shared by pulls, heartbeats and
//! CHECK_CLIENT_CONFIG so each answers a subscription the same way.

use std::sync::Arc;

use protocol::code::response;
use protocol::filter::TagFilter;
use protocol::message::{RecordView, property};

use super::Refusal;
use crate::sql92::{Selector, SelectorCache};

/// A subscription's filter.
#[derive(Debug, Clone)]
pub(crate) enum MessageFilter {
    /// `TAG` expressions (`*`, `TagA || TagB`).
    Tags(TagFilter),
    /// An SQL92 selector.
    Sql(Arc<Selector>),
}

impl MessageFilter {
    /// The filter of a subscription of `kind` (`TAG`, the default, or `SQL92`) with
    /// `expression`.
    ///
    /// # Errors
    /// SYSTEM_ERROR for SQL92 when `enablePropertyFilter` is off or a type RocketMQ does not
    /// have (its words); SUBSCRIPTION_PARSE_FAILED for an SQL92 expression that is empty or
    /// does not compile, with the reason and its place.
    pub(crate) fn new(
        kind: &str,
        expression: &str,
        property_filter: bool,
        selectors: &SelectorCache,
    ) -> Result<MessageFilter, Refusal> {
        if kind.is_empty() || kind.eq_ignore_ascii_case("TAG") {
            return Ok(MessageFilter::Tags(TagFilter::parse(expression)));
        }
        if !kind.eq_ignore_ascii_case("SQL92") || !property_filter {
            return Err(Refusal::new(
                response::SYSTEM_ERROR,
                format!("The broker does not support consumer to filter message by {kind}"),
            ));
        }
        if expression.trim().is_empty() {
            return Err(Refusal::new(
                response::SUBSCRIPTION_PARSE_FAILED,
                "the SQL92 expression is empty",
            ));
        }
        selectors
            .get(expression)
            .map(MessageFilter::Sql)
            .map_err(|err| {
                Refusal::new(
                    response::SUBSCRIPTION_PARSE_FAILED,
                    format!("parse the SQL92 expression [{expression}] failed: {err}"),
                )
            })
    }

    /// Whether a message with this ConsumeQueue tags code may match (SQL92 decides on the
    /// record).
    pub(crate) fn may_match(&self, tags_code: i64) -> bool {
        match self {
            MessageFilter::Tags(tags) => tags.matches_code(tags_code),
            MessageFilter::Sql(_) => true,
        }
    }

    /// Whether the stored record matches: its `TAGS` exactly, or the selector TRUE over its
    /// properties. A record that does not parse does not match.
    pub(crate) fn matches_record(&self, record: &[u8]) -> bool {
        match self {
            MessageFilter::Tags(TagFilter::All) => true,
            MessageFilter::Tags(tags) => {
                let view = RecordView::parse(record).ok();
                tags.matches_tag(view.as_ref().and_then(|v| v.property(property::TAGS)))
            }
            MessageFilter::Sql(selector) => {
                RecordView::parse(record).is_ok_and(|view| selector.matches(&view))
            }
        }
    }
}
