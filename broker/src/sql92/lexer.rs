//! Tokens of RocketMQ's SQL92 selector grammar (FEATURES-SPEC.md §5.1): keywords are
//! case-insensitive, identifiers keep their case, strings are single-quoted with `''` for a
//! quote, comments (`-- …` to the end of the line, `/* … */`) and whitespace are skipped.

use super::ParseError;

/// One token and where it starts (a char index into the expression).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub kind: Kind,
    pub at: usize,
}

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    /// A property name.
    Ident(String),
    /// A string literal, unquoted.
    Str(String),
    /// An integer literal that fits in 32 bits.
    Int(i32),
    /// An integer literal that needs 64 bits.
    Long(i64),
    /// A floating-point literal.
    Double(f64),
    /// A keyword, upper-cased.
    Keyword(Keyword),
    /// `=`, `<>`, `>`, `>=`, `<`, `<=`, `(`, `)`, `,`, `+`, `-`.
    Symbol(&'static str),
    /// The end of the expression.
    End,
}

/// The grammar's keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keyword {
    Not,
    And,
    Or,
    Between,
    In,
    True,
    False,
    Null,
    Is,
    Contains,
    StartsWith,
    EndsWith,
}

impl Keyword {
    fn parse(word: &str) -> Option<Keyword> {
        Some(match word.to_ascii_uppercase().as_str() {
            "NOT" => Keyword::Not,
            "AND" => Keyword::And,
            "OR" => Keyword::Or,
            "BETWEEN" => Keyword::Between,
            "IN" => Keyword::In,
            "TRUE" => Keyword::True,
            "FALSE" => Keyword::False,
            "NULL" => Keyword::Null,
            "IS" => Keyword::Is,
            "CONTAINS" => Keyword::Contains,
            "STARTSWITH" => Keyword::StartsWith,
            "ENDSWITH" => Keyword::EndsWith,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Ident(name) => write!(f, "{name}"),
            Kind::Str(text) => write!(f, "'{}'", text.replace('\'', "''")),
            Kind::Int(v) => write!(f, "{v}"),
            Kind::Long(v) => write!(f, "{v}"),
            Kind::Double(v) => write!(f, "{v}"),
            Kind::Keyword(k) => write!(f, "{}", format!("{k:?}").to_ascii_uppercase()),
            Kind::Symbol(s) => write!(f, "{s}"),
            Kind::End => write!(f, "<EOF>"),
        }
    }
}

/// Splits `text` into tokens, ending with [`Kind::End`].
///
/// # Errors
/// An unterminated string or comment, a number out of range, or a character the grammar does
/// not have, with its position.
pub(super) fn tokens(text: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = i;
        if matches!(c, ' ' | '\t' | '\r' | '\n' | '\u{c}') {
            i += 1;
            continue;
        }
        if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            loop {
                if i + 1 >= chars.len() {
                    return Err(ParseError::new(text, at, "a comment that is never closed"));
                }
                if chars[i] == '*' && chars[i + 1] == '/' {
                    i += 2;
                    break;
                }
                i += 1;
            }
            continue;
        }
        let kind = if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '$'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            match Keyword::parse(&word) {
                Some(keyword) => Kind::Keyword(keyword),
                None => Kind::Ident(word),
            }
        } else if c == '\'' {
            i += 1;
            let mut value = String::new();
            loop {
                match chars.get(i) {
                    None => return Err(ParseError::new(text, at, "a string that is never closed")),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        value.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(other) => {
                        value.push(*other);
                        i += 1;
                    }
                }
            }
            Kind::Str(value)
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let (kind, end) = number(text, &chars, i)?;
            i = end;
            kind
        } else {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let symbol = ["<>", ">=", "<="]
                .into_iter()
                .find(|s| two == *s)
                .or_else(|| {
                    ["=", ">", "<", "(", ")", ",", "+", "-"]
                        .into_iter()
                        .find(|s| s.starts_with(c))
                });
            let Some(symbol) = symbol else {
                return Err(ParseError::new(
                    text,
                    at,
                    format!("unexpected character {c:?}"),
                ));
            };
            i += symbol.len();
            Kind::Symbol(symbol)
        };
        out.push(Token { kind, at });
    }
    out.push(Token {
        kind: Kind::End,
        at: chars.len(),
    });
    Ok(out)
}

/// A number starting at `start`: a decimal (`0` or `[1-9][0-9]*`, optional `L`) or a float
/// (`d+.d*[exp]`, `.d+[exp]`, `d+exp`). Returns the token and the index after it.
fn number(text: &str, chars: &[char], start: usize) -> Result<(Kind, usize), ParseError> {
    let digits = |mut i: usize| {
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = digits(start);
    let mut float = false;
    if chars.get(i) == Some(&'.') {
        float = true;
        i = digits(i + 1);
    }
    if matches!(chars.get(i), Some('e' | 'E')) {
        let mut j = i + 1;
        if matches!(chars.get(j), Some('+' | '-')) {
            j += 1;
        }
        if chars.get(j).is_some_and(char::is_ascii_digit) {
            float = true;
            i = digits(j);
        }
    }
    let literal: String = chars[start..i].iter().collect();
    if float {
        let value: f64 = literal
            .parse()
            .map_err(|_| ParseError::new(text, start, format!("bad number {literal}")))?;
        // RocketMQ's createFloat refuses what is not above Double.MIN_VALUE (0 included) and
        // what overflows.
        if !(value.is_finite() && value >= f64::from_bits(1)) {
            return Err(ParseError::new(
                text,
                start,
                format!("float literal {literal} out of range"),
            ));
        }
        return Ok((Kind::Double(value), i));
    }
    if literal.len() > 1 && literal.starts_with('0') {
        // `0` is a decimal on its own; `012` is two.
        return Ok((Kind::Int(0), start + 1));
    }
    if matches!(chars.get(i), Some('l' | 'L')) {
        i += 1;
    }
    let value: i64 = literal.parse().map_err(|_| {
        ParseError::new(
            text,
            start,
            format!("integer literal {literal} out of range"),
        )
    })?;
    Ok((
        match i32::try_from(value) {
            Ok(v) => Kind::Int(v),
            Err(_) => Kind::Long(value),
        },
        i,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn kinds(text: &str) -> Vec<Kind> {
        tokens(text).unwrap().into_iter().map(|t| t.kind).collect()
    }

    /// Keywords in any case, identifiers as written, strings with doubled quotes, numbers of
    /// each kind, two-character symbols, comments skipped.
    #[test]
    fn tokens_of_each_kind() {
        assert_eq!(
            kinds("a_1 and $B <> 'it''s' -- comment\n or /* c */ 5L >= 3000000000 <= .5e1"),
            vec![
                Kind::Ident("a_1".into()),
                Kind::Keyword(Keyword::And),
                Kind::Ident("$B".into()),
                Kind::Symbol("<>"),
                Kind::Str("it's".into()),
                Kind::Keyword(Keyword::Or),
                Kind::Int(5),
                Kind::Symbol(">="),
                Kind::Long(3_000_000_000),
                Kind::Symbol("<="),
                Kind::Double(5.0),
                Kind::End,
            ]
        );
        assert_eq!(kinds("012"), vec![Kind::Int(0), Kind::Int(12), Kind::End]);
        assert_eq!(
            kinds("1e3 2.")[..2],
            [Kind::Double(1000.0), Kind::Double(2.0)]
        );
    }

    /// What the grammar does not have is refused with its position.
    #[test]
    fn bad_tokens_are_refused_with_their_position() {
        for (text, at, what) in [
            ("a = 'open", 4, "never closed"),
            ("a /* open", 2, "never closed"),
            ("a != 1", 2, "unexpected character '!'"),
            ("a = 99999999999999999999", 4, "out of range"),
            ("a > 0.0", 4, "out of range"),
            ("a > 1e999", 4, "out of range"),
            ("a.b = 1", 1, "unexpected character '.'"),
        ] {
            let err = tokens(text).unwrap_err();
            assert_eq!(err.at, at, "{text}: {err}");
            assert!(err.reason.contains(what), "{text}: {err}");
        }
    }
}
