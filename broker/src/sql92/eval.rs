//! The compiled selector and its evaluation over a message's properties, with RocketMQ's rules
//! (FEATURES-SPEC.md §5.2): properties are strings or missing, a comparison converts the
//! property to the literal's type, SQL's three-valued logic, and a conversion that fails makes
//! the whole evaluation fail (no match).

use std::cmp::Ordering;
use std::fmt;

/// A value during evaluation: a literal, a property's string, or unknown.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
    Str(String),
}

/// A value read during evaluation, borrowing literals and properties.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Val<'a> {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
    Str(&'a str),
}

/// A conversion the comparison needed failed (Java's `NumberFormatException`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EvalError(pub String);

/// `=`, `<>`, `>`, `>=`, `<`, `<=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// `CONTAINS`, `STARTSWITH`, `ENDSWITH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TextOp {
    Contains,
    StartsWith,
    EndsWith,
}

/// A compiled selector.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expr {
    Const(Value),
    Prop(String),
    /// Unary minus of what is not a numeric literal (a property's string negates to unknown).
    Neg(Box<Expr>),
    Not(Box<Expr>),
    /// A property used as a boolean: only the boolean `true` is true; its strings are false.
    AsBool(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// `IS NULL`, or `IS NOT NULL` when negated.
    IsNull(Box<Expr>, bool),
    /// `IN`, or `NOT IN` when negated: a property among strings.
    In(String, Vec<String>, bool),
    /// A string test, or its `NOT` form when negated.
    Text(TextOp, Box<Expr>, String, bool),
}

impl Value {
    pub(super) fn is_number(&self) -> bool {
        matches!(self, Value::Int(_) | Value::Long(_) | Value::Double(_))
    }

    /// A numeric literal negated (others unchanged: the parser negates numbers only).
    pub(super) fn negated(&self) -> Value {
        match self {
            Value::Int(v) => v
                .checked_neg()
                .map_or(Value::Long(-i64::from(*v)), Value::Int),
            Value::Long(v) => Value::Long(v.wrapping_neg()),
            Value::Double(v) => Value::Double(-v),
            other => other.clone(),
        }
    }

    fn val(&self) -> Val<'_> {
        match self {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Int(v) => Val::Int(*v),
            Value::Long(v) => Val::Long(*v),
            Value::Double(v) => Val::Double(*v),
            Value::Str(s) => Val::Str(s),
        }
    }

    /// How two literals order, as evaluation would.
    pub(super) fn order(&self, other: &Value) -> Result<i32, EvalError> {
        order(self.val(), other.val())
    }
}

impl Expr {
    /// RocketMQ's `BooleanExpression`: what yields TRUE, FALSE or unknown (NULL among them).
    pub(super) fn is_boolean(&self) -> bool {
        match self {
            Expr::Const(v) => matches!(v, Value::Bool(_) | Value::Null),
            Expr::Prop(_) | Expr::Neg(_) => false,
            _ => true,
        }
    }

    pub(super) fn is_boolean_constant(&self) -> bool {
        matches!(self, Expr::Const(Value::Bool(_) | Value::Null))
    }

    /// Evaluates over `lookup` (a property's value by name).
    pub(super) fn eval<'a>(&'a self, lookup: &'a dyn super::Lookup) -> Result<Val<'a>, EvalError> {
        Ok(match self {
            Expr::Const(v) => v.val(),
            Expr::Prop(name) => lookup.property(name).map_or(Val::Null, Val::Str),
            Expr::Neg(inner) => match inner.eval(lookup)? {
                Val::Int(v) => v.checked_neg().map_or(Val::Long(-i64::from(v)), Val::Int),
                Val::Long(v) => Val::Long(v.wrapping_neg()),
                Val::Double(v) => Val::Double(-v),
                _ => Val::Null,
            },
            Expr::Not(inner) => match inner.eval(lookup)? {
                Val::Bool(b) => Val::Bool(!b),
                _ => Val::Null,
            },
            Expr::AsBool(inner) => match inner.eval(lookup)? {
                Val::Null => Val::Null,
                v => Val::Bool(v == Val::Bool(true)),
            },
            Expr::And(l, r) => {
                let lv = l.eval(lookup)?;
                if lv == Val::Bool(false) {
                    return Ok(Val::Bool(false));
                }
                let rv = r.eval(lookup)?;
                match (lv, rv) {
                    (_, Val::Bool(false)) => Val::Bool(false),
                    (Val::Bool(true), Val::Bool(true)) => Val::Bool(true),
                    _ => Val::Null,
                }
            }
            Expr::Or(l, r) => {
                let lv = l.eval(lookup)?;
                if lv == Val::Bool(true) {
                    return Ok(Val::Bool(true));
                }
                let rv = r.eval(lookup)?;
                match (lv, rv) {
                    (_, Val::Bool(true)) => Val::Bool(true),
                    (Val::Bool(false), Val::Bool(false)) => Val::Bool(false),
                    _ => Val::Null,
                }
            }
            Expr::Cmp(op, l, r) => {
                let (lv, rv) = (l.eval(lookup)?, r.eval(lookup)?);
                if lv == Val::Null || rv == Val::Null {
                    return Ok(Val::Null);
                }
                Val::Bool(match op {
                    CmpOp::Eq => equal(lv, rv)?,
                    CmpOp::Ne => !equal(lv, rv)?,
                    CmpOp::Gt => ordered(lv, rv)? > 0,
                    CmpOp::Ge => ordered(lv, rv)? >= 0,
                    CmpOp::Lt => ordered(lv, rv)? < 0,
                    CmpOp::Le => ordered(lv, rv)? <= 0,
                })
            }
            Expr::IsNull(inner, negated) => {
                Val::Bool((inner.eval(lookup)? == Val::Null) != *negated)
            }
            Expr::In(name, list, negated) => match lookup.property(name) {
                None => Val::Null,
                Some(value) => Val::Bool(list.iter().any(|s| s == value) != *negated),
            },
            Expr::Text(op, inner, needle, negated) => match inner.eval(lookup)? {
                Val::Str(s) if !needle.is_empty() => {
                    let found = match op {
                        TextOp::Contains => s.contains(needle.as_str()),
                        TextOp::StartsWith => s.starts_with(needle.as_str()),
                        TextOp::EndsWith => s.ends_with(needle.as_str()),
                    };
                    Val::Bool(found != *negated)
                }
                _ => Val::Bool(false),
            },
        })
    }
}

/// `=`: two strings compare as text, anything else through [`order`].
fn equal(l: Val<'_>, r: Val<'_>) -> Result<bool, EvalError> {
    if let (Val::Str(a), Val::Str(b)) = (l, r) {
        return Ok(a == b);
    }
    Ok(order(l, r)? == 0)
}

/// `>`, `>=`, `<`, `<=`: two strings compare as numbers.
fn ordered(l: Val<'_>, r: Val<'_>) -> Result<i32, EvalError> {
    if let (Val::Str(a), Val::Str(b)) = (l, r) {
        return Ok(cmp_f64(java_double(a)?, java_double(b)?));
    }
    order(l, r)
}

/// RocketMQ's `ComparisonExpression.compare`: a string converts to the other side's type,
/// numbers widen (int, long, double); unrelated types order as "less".
fn order(l: Val<'_>, r: Val<'_>) -> Result<i32, EvalError> {
    use Val::{Bool, Double, Int, Long, Str};
    Ok(match (l, r) {
        (Int(a), Int(b)) => sign(a.cmp(&b)),
        (Long(a), Long(b)) => sign(a.cmp(&b)),
        (Int(a), Long(b)) => sign(i64::from(a).cmp(&b)),
        (Long(a), Int(b)) => sign(a.cmp(&i64::from(b))),
        (Double(a), Double(b)) => cmp_f64(a, b),
        (Int(a), Double(b)) => cmp_f64(f64::from(a), b),
        (Double(a), Int(b)) => cmp_f64(a, f64::from(b)),
        (Long(a), Double(b)) => cmp_f64(a as f64, b),
        (Double(a), Long(b)) => cmp_f64(a, b as f64),
        (Bool(a), Bool(b)) => sign(a.cmp(&b)),
        (Str(s), Int(b)) => sign(java_int(s)?.cmp(&b)),
        (Int(a), Str(s)) => sign(a.cmp(&java_int(s)?)),
        (Str(s), Long(b)) => sign(java_long(s)?.cmp(&b)),
        (Long(a), Str(s)) => sign(a.cmp(&java_long(s)?)),
        (Str(s), Double(b)) => cmp_f64(java_double(s)?, b),
        (Double(a), Str(s)) => cmp_f64(a, java_double(s)?),
        (Str(s), Bool(b)) => sign(s.eq_ignore_ascii_case("true").cmp(&b)),
        (Bool(a), Str(s)) => sign(a.cmp(&s.eq_ignore_ascii_case("true"))),
        (Str(a), Str(b)) => sign(a.cmp(b)),
        _ => -1,
    })
}

fn sign(o: Ordering) -> i32 {
    match o {
        Ordering::Less => -1,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    }
}

/// Java's `Double.compareTo`: -0.0 below 0.0, NaN above everything.
fn cmp_f64(a: f64, b: f64) -> i32 {
    sign(a.total_cmp(&b))
}

/// Java's `Integer.valueOf`.
fn java_int(s: &str) -> Result<i32, EvalError> {
    s.parse()
        .map_err(|_| EvalError(format!("For input string: \"{s}\" (not an int)")))
}

/// Java's `Long.valueOf`.
fn java_long(s: &str) -> Result<i64, EvalError> {
    s.parse()
        .map_err(|_| EvalError(format!("For input string: \"{s}\" (not a long)")))
}

/// Java's `Double.valueOf`: surrounding whitespace ignored, a `d`/`f` suffix allowed, and of
/// words only `NaN` and `Infinity`.
fn java_double(s: &str) -> Result<f64, EvalError> {
    let bad = || EvalError(format!("For input string: \"{s}\" (not a double)"));
    let t = s.trim_matches(|c: char| c <= ' ');
    let t = match t.strip_suffix(['d', 'D', 'f', 'F']) {
        Some(rest) if rest.ends_with(|c: char| c.is_ascii_digit() || c == '.') => rest,
        _ => t,
    };
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    let word = unsigned
        .chars()
        .any(|c| c.is_ascii_alphabetic() && !matches!(c, 'e' | 'E'));
    if word && unsigned != "Infinity" && unsigned != "NaN" {
        return Err(bad());
    }
    t.parse().map_err(|_| bad())
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "NULL"),
            Value::Bool(b) => write!(f, "{}", if *b { "TRUE" } else { "FALSE" }),
            Value::Int(v) => write!(f, "{v}"),
            Value::Long(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v:?}"),
            Value::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Const(v) => write!(f, "{v}"),
            Expr::Prop(name) => write!(f, "{name}"),
            Expr::Neg(e) => write!(f, "-{e}"),
            Expr::Not(e) => write!(f, "NOT {e}"),
            Expr::AsBool(e) => write!(f, "{e}"),
            Expr::And(l, r) => write!(f, "({l} AND {r})"),
            Expr::Or(l, r) => write!(f, "({l} OR {r})"),
            Expr::Cmp(op, l, r) => {
                let op = match op {
                    CmpOp::Eq => "=",
                    CmpOp::Ne => "<>",
                    CmpOp::Gt => ">",
                    CmpOp::Ge => ">=",
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                };
                write!(f, "({l} {op} {r})")
            }
            Expr::IsNull(e, negated) => {
                write!(f, "({e} IS {}NULL)", if *negated { "NOT " } else { "" })
            }
            Expr::In(name, list, negated) => {
                let list: Vec<String> = list
                    .iter()
                    .map(|s| Value::Str(s.clone()).to_string())
                    .collect();
                write!(
                    f,
                    "({name} {}IN ({}))",
                    if *negated { "NOT " } else { "" },
                    list.join(", ")
                )
            }
            Expr::Text(op, e, needle, negated) => {
                let op = match op {
                    TextOp::Contains => "CONTAINS",
                    TextOp::StartsWith => "STARTSWITH",
                    TextOp::EndsWith => "ENDSWITH",
                };
                let not = if *negated { "NOT " } else { "" };
                write!(f, "({e} {not}{op} {})", Value::Str(needle.clone()))
            }
        }
    }
}
