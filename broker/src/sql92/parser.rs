//! RocketMQ's selector grammar (FEATURES-SPEC.md §5.1) by recursive descent, with the checks
//! RocketMQ's parser makes before anything is evaluated: ordering comparisons only between
//! numbers and properties, no `= NULL`, `IN` only on a property, `BETWEEN` bounds in order, and
//! a selector that yields a boolean.

use super::ParseError;
use super::eval::{CmpOp, Expr, TextOp, Value};
use super::lexer::{Keyword, Kind, Token, tokens};
use crate::limits::{SQL92_DEPTH_MAX, SQL92_EXPRESSION_BYTES_MAX, SQL92_NODES_MAX};

/// Parses a whole selector.
pub(super) fn parse(text: &str) -> Result<Expr, ParseError> {
    if text.len() > SQL92_EXPRESSION_BYTES_MAX {
        return Err(ParseError::new(
            text,
            0,
            format!(
                "expression of {} bytes, over the {SQL92_EXPRESSION_BYTES_MAX}-byte limit",
                text.len()
            ),
        ));
    }
    let mut p = Parser {
        text,
        tokens: tokens(text)?,
        next: 0,
        depth: 0,
        nodes: 0,
    };
    if p.peek() == &Kind::End {
        return Err(p.error_here("an empty expression"));
    }
    let at = p.at();
    let expr = p.or_expr()?;
    if p.peek() != &Kind::End {
        return Err(p.error_here("expected AND, OR or the end"));
    }
    p.as_boolean(expr, at)
}

struct Parser<'t> {
    text: &'t str,
    tokens: Vec<Token>,
    next: usize,
    depth: usize,
    nodes: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Kind {
        &self.tokens[self.next].kind
    }

    fn peek_second(&self) -> &Kind {
        &self.tokens[(self.next + 1).min(self.tokens.len() - 1)].kind
    }

    fn at(&self) -> usize {
        self.tokens[self.next].at
    }

    fn bump(&mut self) -> Kind {
        let kind = self.tokens[self.next].kind.clone();
        if kind != Kind::End {
            self.next += 1;
        }
        kind
    }

    fn eat_keyword(&mut self, keyword: Keyword) -> bool {
        if self.peek() == &Kind::Keyword(keyword) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        if matches!(self.peek(), Kind::Symbol(s) if *s == symbol) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn error_here(&self, expected: &str) -> ParseError {
        let token = &self.tokens[self.next];
        ParseError::new(
            self.text,
            token.at,
            format!("Encountered \"{}\": {expected}", token.kind),
        )
    }

    fn error_at(&self, at: usize, reason: impl Into<String>) -> ParseError {
        ParseError::new(self.text, at, reason)
    }

    /// Counts a node of the tree: the tree's size bounds evaluation's recursion.
    fn node(&mut self, expr: Expr) -> Result<Expr, ParseError> {
        self.nodes += 1;
        if self.nodes > SQL92_NODES_MAX {
            return Err(self.error_here(&format!(
                "the expression has more than {SQL92_NODES_MAX} parts"
            )));
        }
        Ok(expr)
    }

    /// RocketMQ's `asBooleanExpression`: a boolean expression stays, a property is cast,
    /// anything else is refused.
    fn as_boolean(&mut self, expr: Expr, at: usize) -> Result<Expr, ParseError> {
        if expr.is_boolean() {
            Ok(expr)
        } else if matches!(expr, Expr::Prop(_)) {
            self.node(Expr::AsBool(Box::new(expr)))
        } else {
            Err(self.error_at(
                at,
                format!("Expression will not result in a boolean value: {expr}"),
            ))
        }
    }

    fn or_expr(&mut self) -> Result<Expr, ParseError> {
        self.chain(Keyword::Or, Self::and_expr, Expr::Or)
    }

    fn and_expr(&mut self) -> Result<Expr, ParseError> {
        self.chain(Keyword::And, Self::eq_expr, Expr::And)
    }

    /// `operand (keyword operand)*`, each operand a boolean, joined left to right.
    fn chain(
        &mut self,
        keyword: Keyword,
        operand: fn(&mut Self) -> Result<Expr, ParseError>,
        join: fn(Box<Expr>, Box<Expr>) -> Expr,
    ) -> Result<Expr, ParseError> {
        let at = self.at();
        let mut left = operand(self)?;
        while self.eat_keyword(keyword) {
            let right_at = self.at();
            let right = operand(self)?;
            let l = self.as_boolean(left, at)?;
            let r = self.as_boolean(right, right_at)?;
            left = self.node(join(Box::new(l), Box::new(r)))?;
        }
        Ok(left)
    }

    fn eq_expr(&mut self) -> Result<Expr, ParseError> {
        let at = self.at();
        let mut left = self.cmp_expr()?;
        loop {
            let op = if self.eat_symbol("=") {
                CmpOp::Eq
            } else if self.eat_symbol("<>") {
                CmpOp::Ne
            } else if self.eat_keyword(Keyword::Is) {
                let negated = self.eat_keyword(Keyword::Not);
                if !self.eat_keyword(Keyword::Null) {
                    return Err(self.error_here("expected NULL after IS"));
                }
                left = self.node(Expr::IsNull(Box::new(left), negated))?;
                continue;
            } else {
                return Ok(left);
            };
            let right_at = self.at();
            let right = self.cmp_expr()?;
            for (side, side_at) in [(&left, at), (&right, right_at)] {
                if matches!(side, Expr::Const(Value::Null)) {
                    return Err(self.error_at(
                        side_at,
                        "'NULL' cannot be compared: use IS NULL or IS NOT NULL",
                    ));
                }
            }
            if left.is_boolean_constant()
                && matches!(right, Expr::Const(_))
                && !right.is_boolean_constant()
            {
                return Err(self.error_at(
                    right_at,
                    format!("'{left}' cannot be compared with '{right}'"),
                ));
            }
            left = self.node(Expr::Cmp(op, Box::new(left), Box::new(right)))?;
        }
    }

    /// RocketMQ's `checkLessThanOperand`: only numbers and non-boolean expressions are ordered.
    fn orderable(&self, expr: &Expr, at: usize) -> Result<(), ParseError> {
        let constant_not_number = matches!(expr, Expr::Const(v) if !v.is_number());
        if constant_not_number || expr.is_boolean() {
            return Err(self.error_at(at, format!("Value '{expr}' cannot be compared.")));
        }
        Ok(())
    }

    fn ordered(
        &mut self,
        op: CmpOp,
        left: Expr,
        left_at: usize,
        right: Expr,
        right_at: usize,
    ) -> Result<Expr, ParseError> {
        self.orderable(&left, left_at)?;
        self.orderable(&right, right_at)?;
        self.node(Expr::Cmp(op, Box::new(left), Box::new(right)))
    }

    fn cmp_expr(&mut self) -> Result<Expr, ParseError> {
        let at = self.at();
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Kind::Symbol(">") => Some(CmpOp::Gt),
                Kind::Symbol(">=") => Some(CmpOp::Ge),
                Kind::Symbol("<") => Some(CmpOp::Lt),
                Kind::Symbol("<=") => Some(CmpOp::Le),
                _ => None,
            };
            if let Some(op) = op {
                self.bump();
                let right_at = self.at();
                let right = self.unary()?;
                left = self.ordered(op, left, at, right, right_at)?;
                continue;
            }
            // `NOT` here belongs to the operator after it; a `NOT` before anything else is not
            // ours (it cannot follow an operand).
            let negated = self.peek() == &Kind::Keyword(Keyword::Not)
                && matches!(
                    self.peek_second(),
                    Kind::Keyword(
                        Keyword::Contains
                            | Keyword::StartsWith
                            | Keyword::EndsWith
                            | Keyword::Between
                            | Keyword::In
                    )
                );
            if negated {
                self.bump();
            }
            let text_op = match self.peek() {
                Kind::Keyword(Keyword::Contains) => Some(TextOp::Contains),
                Kind::Keyword(Keyword::StartsWith) => Some(TextOp::StartsWith),
                Kind::Keyword(Keyword::EndsWith) => Some(TextOp::EndsWith),
                _ => None,
            };
            if let Some(op) = text_op {
                self.bump();
                let before = self.next;
                let Kind::Str(needle) = self.bump() else {
                    self.next = before;
                    return Err(self.error_here("expected a string"));
                };
                left = self.node(Expr::Text(op, Box::new(left), needle, negated))?;
                continue;
            }
            if self.eat_keyword(Keyword::Between) {
                let low_at = self.at();
                let low = self.unary()?;
                if !self.eat_keyword(Keyword::And) {
                    return Err(self.error_here("expected AND in BETWEEN"));
                }
                let high_at = self.at();
                let high = self.unary()?;
                if let (Expr::Const(l), Expr::Const(h)) = (&low, &high) {
                    if matches!(l, Value::Null) || matches!(h, Value::Null) {
                        return Err(self.error_at(low_at, "Null value in BETWEEN"));
                    }
                    if l.is_number() && h.is_number() && l.order(h).is_ok_and(|o| o > 0) {
                        return Err(self.error_at(high_at, "Low should be <= high in BETWEEN"));
                    }
                }
                left = if negated {
                    let below = self.ordered(CmpOp::Lt, left.clone(), at, low, low_at)?;
                    let above = self.ordered(CmpOp::Gt, left, at, high, high_at)?;
                    self.node(Expr::Or(Box::new(below), Box::new(above)))?
                } else {
                    let from = self.ordered(CmpOp::Ge, left.clone(), at, low, low_at)?;
                    let to = self.ordered(CmpOp::Le, left, at, high, high_at)?;
                    self.node(Expr::And(Box::new(from), Box::new(to)))?
                };
                continue;
            }
            if self.eat_keyword(Keyword::In) {
                let Expr::Prop(name) = left else {
                    return Err(
                        self.error_at(at, format!("IN needs a property on its left, not {left}"))
                    );
                };
                if !self.eat_symbol("(") {
                    return Err(self.error_here("expected ( after IN"));
                }
                let mut list = Vec::new();
                loop {
                    let before = self.next;
                    match self.bump() {
                        Kind::Str(value) => list.push(value),
                        _ => {
                            self.next = before;
                            return Err(self.error_here("expected a string in IN (…)"));
                        }
                    }
                    if self.eat_symbol(")") {
                        break;
                    }
                    if !self.eat_symbol(",") {
                        return Err(self.error_here("expected , or ) in IN (…)"));
                    }
                }
                left = self.node(Expr::In(name, list, negated))?;
                continue;
            }
            if negated {
                self.next -= 1;
            }
            return Ok(left);
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        self.depth += 1;
        if self.depth > SQL92_DEPTH_MAX {
            return Err(self.error_here(&format!("nested more than {SQL92_DEPTH_MAX} deep")));
        }
        let result = self.unary_inner();
        self.depth -= 1;
        result
    }

    fn unary_inner(&mut self) -> Result<Expr, ParseError> {
        if self.eat_symbol("+") {
            return self.unary();
        }
        if self.eat_symbol("-") {
            let operand = self.unary()?;
            return match operand {
                Expr::Const(value) if value.is_number() => Ok(Expr::Const(value.negated())),
                other => self.node(Expr::Neg(Box::new(other))),
            };
        }
        if self.eat_keyword(Keyword::Not) {
            let operand_at = self.at();
            let operand = self.unary()?;
            let operand = self.as_boolean(operand, operand_at)?;
            return self.node(Expr::Not(Box::new(operand)));
        }
        let before = self.next;
        let expr = match self.bump() {
            Kind::Str(s) => Expr::Const(Value::Str(s)),
            Kind::Int(v) => Expr::Const(Value::Int(v)),
            Kind::Long(v) => Expr::Const(Value::Long(v)),
            Kind::Double(v) => Expr::Const(Value::Double(v)),
            Kind::Keyword(Keyword::True) => Expr::Const(Value::Bool(true)),
            Kind::Keyword(Keyword::False) => Expr::Const(Value::Bool(false)),
            Kind::Keyword(Keyword::Null) => Expr::Const(Value::Null),
            Kind::Ident(name) => Expr::Prop(name),
            Kind::Symbol("(") => {
                let inner = self.or_expr()?;
                if !self.eat_symbol(")") {
                    return Err(self.error_here("expected )"));
                }
                return Ok(inner);
            }
            _ => {
                self.next = before;
                return Err(self.error_here("expected a value, a property or ("));
            }
        };
        self.node(expr)
    }
}
