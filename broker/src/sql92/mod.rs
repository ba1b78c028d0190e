//! SQL92 property selectors, as RocketMQ consumers subscribe with them
//! (`MessageSelector.bySql("region = 'hz' AND price > 100")`, FEATURES-SPEC.md §5): compiled
//! once per subscription, evaluated per message over its properties.
//!
//! - `lexer`: tokens (keywords in any case, `'…'` strings, integers, floats, comments).
//! - `parser`: the grammar and RocketMQ's parse-time checks.
//! - `eval`: the compiled tree and its evaluation (three-valued logic, conversions).
//!
//! A message matches only when the selector evaluates to TRUE: unknown (a missing property in
//! a comparison) and a failed conversion (`price > 5` with `price=abc`) do not match.

mod eval;
mod lexer;
mod parser;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError};

use protocol::message::RecordView;

/// Where a selector reads a message's properties.
pub trait Lookup {
    /// The value of property `name`, if the message has it.
    fn property(&self, name: &str) -> Option<&str>;
}

impl Lookup for protocol::message::Properties {
    fn property(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}

impl Lookup for RecordView<'_> {
    fn property(&self, name: &str) -> Option<&str> {
        RecordView::property(self, name)
    }
}

impl<K: std::borrow::Borrow<str> + Ord, V: AsRef<str>> Lookup for std::collections::BTreeMap<K, V> {
    fn property(&self, name: &str) -> Option<&str> {
        self.get(name).map(AsRef::as_ref)
    }
}

/// A compiled selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    expr: eval::Expr,
}

/// Why an expression does not compile: a reason and where (RocketMQ's answer names the
/// position too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at line {line}, column {column}")]
pub struct ParseError {
    /// What is wrong.
    pub reason: String,
    /// The character index in the expression it is at.
    pub at: usize,
    /// 1-based line of `at`.
    pub line: usize,
    /// 1-based column of `at`.
    pub column: usize,
}

impl ParseError {
    fn new(text: &str, at: usize, reason: impl Into<String>) -> ParseError {
        let before: Vec<char> = text.chars().take(at).collect();
        let line = 1 + before.iter().filter(|c| **c == '\n').count();
        let column = 1 + before.iter().rev().take_while(|c| **c != '\n').count();
        ParseError {
            reason: reason.into(),
            at,
            line,
            column,
        }
    }
}

impl Selector {
    /// Compiles `text`.
    ///
    /// # Errors
    /// [`ParseError`] naming the position, for anything RocketMQ's parser refuses, an
    /// expression over [`crate::limits::SQL92_EXPRESSION_BYTES_MAX`], or nesting past
    /// [`crate::limits::SQL92_DEPTH_MAX`]. Never panics.
    pub fn compile(text: &str) -> Result<Selector, ParseError> {
        Ok(Selector {
            expr: parser::parse(text)?,
        })
    }

    /// Whether a message with these properties matches: the selector is TRUE for it.
    pub fn matches(&self, properties: &dyn Lookup) -> bool {
        self.evaluate(properties) == Ok(Some(true))
    }

    /// TRUE, FALSE or unknown (`None`) for these properties, or why a conversion failed.
    ///
    /// # Errors
    /// The conversion that failed, in Java's words (`For input string: "abc"`).
    pub fn evaluate(&self, properties: &dyn Lookup) -> Result<Option<bool>, String> {
        match self.expr.eval(properties) {
            Ok(eval::Val::Bool(b)) => Ok(Some(b)),
            Ok(_) => Ok(None),
            Err(eval::EvalError(reason)) => Err(reason),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.expr)
    }
}

/// Selectors compiled by expression text, so a subscription's expression is compiled once,
/// not on every pull: pulls carry it, heartbeats repeat it. Bounded: when
/// [`crate::limits::SQL92_SELECTORS_CACHED_MAX`] are held, the cache starts over.
#[derive(Debug, Default)]
pub struct SelectorCache {
    compiled: std::sync::Mutex<HashMap<String, Result<Arc<Selector>, ParseError>>>,
}

impl SelectorCache {
    /// The selector of `text`, compiled now or before.
    ///
    /// # Errors
    /// Why `text` does not compile.
    pub fn get(&self, text: &str) -> Result<Arc<Selector>, ParseError> {
        let mut compiled = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = compiled.get(text) {
            return found.clone();
        }
        if compiled.len() >= crate::limits::SQL92_SELECTORS_CACHED_MAX {
            compiled.clear();
        }
        let result = Selector::compile(text).map(Arc::new);
        compiled.insert(text.to_string(), result.clone());
        result
    }
}

#[cfg(test)]
mod tests;
