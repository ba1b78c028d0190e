//! The grammar and RocketMQ's evaluation rules, case by case, then properties over random
//! input: nothing panics, and every valid expression prints back to itself.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// What `selector` gives for `pairs`: `Some(true)`, `Some(false)`, `None` (unknown) or, as
/// `Err`, a failed conversion.
fn eval(selector: &str, pairs: &[(&str, &str)]) -> Result<Option<bool>, String> {
    Selector::compile(selector)
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .evaluate(&props(pairs))
}

fn matches(selector: &str, pairs: &[(&str, &str)]) -> bool {
    Selector::compile(selector)
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .matches(&props(pairs))
}

fn refused(selector: &str) -> ParseError {
    Selector::compile(selector).expect_err(selector)
}

/// Every comparison on numbers and strings, with the property converted to the literal's type.
#[test]
fn comparisons() {
    let p = [("a", "5"), ("s", "hz")];
    for (selector, expected) in [
        ("a = 5", true),
        ("a <> 5", false),
        ("a > 4", true),
        ("a >= 5", true),
        ("a < 5", false),
        ("a <= 5", true),
        ("a > 4.5", true),
        ("a < 5.5", true),
        ("a = 5L", true),
        ("a > 3000000000", false),
        ("5 = a", true),
        ("6 > a", true),
        ("s = 'hz'", true),
        ("s = 'HZ'", false),
        ("s <> 'sh'", true),
        ("a BETWEEN 1 AND 5", true),
        ("a BETWEEN 6 AND 9", false),
        ("a NOT BETWEEN 6 AND 9", true),
        ("a NOT BETWEEN 1 AND 5", false),
        ("s IN ('sh', 'hz')", true),
        ("s IN ('sh')", false),
        ("s NOT IN ('sh')", true),
        ("s NOT IN ('hz', 'sh')", false),
        ("s IS NULL", false),
        ("s IS NOT NULL", true),
        ("x IS NULL", true),
        ("x IS NOT NULL", false),
        ("s CONTAINS 'z'", true),
        ("s NOT CONTAINS 'z'", false),
        ("s STARTSWITH 'h'", true),
        ("s NOT STARTSWITH 'h'", false),
        ("s ENDSWITH 'z'", true),
        ("s NOT ENDSWITH 'h'", true),
        ("s CONTAINS ''", false),
        ("s NOT CONTAINS ''", false),
        ("a = 5 AND s = 'hz'", true),
        ("a = 6 OR s = 'hz'", true),
        ("NOT (a = 6)", true),
        ("TRUE", true),
        ("FALSE", false),
        ("a = -5", false),
        ("-a = -5", false),
    ] {
        assert_eq!(matches(selector, &p), expected, "{selector}");
    }
}

/// Keywords in any case, comments and line breaks; identifiers keep their case.
#[test]
fn keywords_comments_and_case() {
    let p = [("Region", "hz")];
    assert!(matches("region is null and Region = 'hz'", &p));
    assert!(matches(
        "Region in ('hz') -- the rest is a comment\n AnD /* here too */ tRuE",
        &p
    ));
    assert!(matches("Region = 'it''s' OR Region = 'hz'", &p));
    assert!(matches("Region = 'it''s'", &[("Region", "it's")]));
}

/// AND binds tighter than OR; NOT binds tighter than a comparison (`NOT a = 1` is
/// `(NOT a) = 1`, which never matches), parentheses override.
#[test]
fn precedence() {
    let p = [("a", "1"), ("b", "2"), ("c", "9")];
    assert!(matches("a = 1 OR b = 0 AND c = 0", &p));
    assert!(!matches("(a = 1 OR b = 0) AND c = 0", &p));
    assert!(matches("NOT (a = 2)", &p));
    assert!(
        !matches("NOT a = 2", &p),
        "(NOT a) = 2 compares a boolean to 2"
    );
    assert!(!matches("NOT a = 1", &p));
}

/// A missing property: comparisons, IN and BETWEEN are unknown (no match, and NOT keeps them
/// unknown); string tests are false (their NOT forms too); three-valued AND and OR.
#[test]
fn nulls() {
    let none: [(&str, &str); 0] = [];
    for selector in [
        "a = 1",
        "a <> 1",
        "a > 1",
        "a IN ('x')",
        "a NOT IN ('x')",
        "a BETWEEN 1 AND 2",
        "NOT (a = 1)",
        "a = 1 AND TRUE",
        "a = 1 OR FALSE",
        "a = b",
        "a",
        "-a > 1",
    ] {
        assert_eq!(eval(selector, &none), Ok(None), "{selector}");
    }
    assert_eq!(eval("a CONTAINS 'x'", &none), Ok(Some(false)));
    assert_eq!(eval("a NOT CONTAINS 'x'", &none), Ok(Some(false)));
    assert_eq!(eval("NOT (a CONTAINS 'x')", &none), Ok(Some(true)));
    assert_eq!(eval("a = 1 AND FALSE", &none), Ok(Some(false)));
    assert_eq!(eval("a = 1 OR TRUE", &none), Ok(Some(true)));
    assert_eq!(eval("a IS NULL", &none), Ok(Some(true)));
    assert_eq!(eval("(a = 1) IS NULL", &none), Ok(Some(true)));
    assert_eq!(eval("NULL IS NULL", &none), Ok(Some(true)));
}

/// Conversions as Java makes them; one that fails fails the whole evaluation, unless an
/// earlier operand already decided it.
#[test]
fn conversions() {
    assert!(matches("flag = TRUE", &[("flag", "TRUE")]));
    assert!(matches("flag = TRUE", &[("flag", "true")]));
    assert!(!matches("flag = TRUE", &[("flag", "yes")]));
    assert!(
        matches("a > b", &[("a", "10"), ("b", "9")]),
        "two properties order as numbers"
    );
    assert!(
        !matches("a = b", &[("a", "10"), ("b", "10.0")]),
        "and compare equal as text"
    );
    assert!(
        matches("a = 1.5", &[("a", " 1.5 ")]),
        "Double.valueOf trims"
    );
    assert!(matches("a = 1.5", &[("a", "1.5d")]));
    assert!(matches("a < 1.5", &[("a", "-Infinity")]));
    assert!(eval("a = 5", &[("a", "5.0")]).unwrap_err().contains("5.0"));
    assert!(
        eval("a = 5", &[("a", " 5")]).is_err(),
        "Integer.valueOf does not trim"
    );
    assert!(eval("a > 1.5", &[("a", "inf")]).is_err());
    assert!(eval("a > b", &[("a", "x"), ("b", "1")]).is_err());
    assert!(!matches("a > 5 OR s = 'x'", &[("a", "abc"), ("s", "x")]));
    assert!(matches("s = 'x' OR a > 5", &[("a", "abc"), ("s", "x")]));
    assert!(!matches("s = 'y' AND a > 5", &[("a", "abc"), ("s", "x")]));
    assert!(
        !matches("flag", &[("flag", "true")]),
        "a property's string is never the boolean TRUE"
    );
}

/// Numbers at their edges: 32-bit literals compare through `Integer.valueOf`, larger ones
/// through `Long.valueOf`; negative literals by unary minus.
#[test]
fn numbers_at_the_edges() {
    assert!(matches("a = 2147483647", &[("a", "2147483647")]));
    assert!(eval("a = 2147483647", &[("a", "2147483648")]).is_err());
    assert!(matches("a = 2147483648", &[("a", "2147483648")]));
    assert!(matches("a = -2147483648", &[("a", "-2147483648")]));
    assert!(matches(
        "a = 9223372036854775807",
        &[("a", "9223372036854775807")]
    ));
    assert!(eval("a = 9223372036854775807", &[("a", "9223372036854775808")]).is_err());
    assert!(matches(
        "a = -9223372036854775807",
        &[("a", "-9223372036854775807")]
    ));
    assert!(matches("a > 4.9E-324", &[("a", "1")]));
    assert!(matches("a = 1e3", &[("a", "1000")]));
    assert!(matches("a = .5", &[("a", "0.5")]));
    assert!(matches("a = - - 5", &[("a", "5")]));
    assert!(matches("a = +5", &[("a", "5")]));
    assert!(matches("1 = 1.0 AND 2 > 1L AND 3000000000 > 2.5", &[]));
    refused("a = 9223372036854775808");
    refused("a > 0.0");
    refused("a > 1e309");
}

/// Message keys and tags are properties too.
#[test]
fn system_properties_are_visible() {
    let mut p = protocol::message::Properties::default();
    p.set(protocol::message::property::TAGS, "TagA");
    p.set("price", "120");
    let s = Selector::compile("TAGS = 'TagA' AND price > 100").unwrap();
    assert!(s.matches(&p));
}

/// What RocketMQ's parser refuses, each with the reason and where.
#[test]
fn refusals_name_the_problem_and_its_place() {
    for (selector, column, what) in [
        ("", 1, "empty"),
        ("   -- only a comment", 21, "empty"),
        ("a > 'x'", 5, "cannot be compared"),
        ("a > TRUE", 5, "cannot be compared"),
        ("(a = 1) > 2", 1, "cannot be compared"),
        ("a >= NULL", 6, "cannot be compared"),
        ("a = NULL", 5, "NULL"),
        ("NULL <> a", 1, "NULL"),
        ("TRUE = 5", 8, "cannot be compared with"),
        ("5 IN ('a')", 1, "IN needs a property"),
        ("a IN (1)", 7, "expected a string"),
        ("a IN ('x'", 10, "expected , or )"),
        ("a IN 'x'", 6, "expected ("),
        ("a BETWEEN 5 AND 1", 17, "Low should be <= high"),
        ("a BETWEEN 1 5", 13, "expected AND"),
        ("a BETWEEN 'a' AND 'b'", 11, "cannot be compared"),
        ("a CONTAINS 5", 12, "expected a string"),
        ("5", 1, "will not result in a boolean"),
        ("'x'", 1, "will not result in a boolean"),
        ("NOT 5", 5, "will not result in a boolean"),
        ("a = 1 AND 5", 11, "will not result in a boolean"),
        ("-a", 1, "will not result in a boolean"),
        ("a =", 4, "expected a value"),
        ("a = 1)", 6, "expected AND, OR or the end"),
        ("(a = 1", 7, "expected )"),
        ("a LIKE 'x'", 3, "expected AND, OR or the end"),
        ("a IS 5", 6, "expected NULL"),
        ("a != 1", 3, "unexpected character"),
        ("a = 1 AND b.c = 2", 12, "unexpected character"),
        ("a = \"x\"", 5, "unexpected character"),
        ("a = 'open", 5, "never closed"),
    ] {
        let err = refused(selector);
        assert_eq!(err.column, column, "{selector:?}: {err}");
        assert!(err.reason.contains(what), "{selector:?}: {err}");
    }
    let err = refused("a = 1 AND\n  b = ");
    assert_eq!((err.line, err.column), (2, 7), "{err}");
}

/// Inputs built to exhaust the stack or the time of an evaluation are refused.
#[test]
fn hostile_sizes_are_refused() {
    let deep = format!("{}a = 1{}", "(".repeat(200), ")".repeat(200));
    assert!(refused(&deep).reason.contains("nested"));
    let nots = format!("{}a", "NOT ".repeat(200));
    assert!(refused(&nots).reason.contains("nested"));
    let long_chain = vec!["a = 1"; 1500].join(" AND ");
    assert!(refused(&long_chain).reason.contains("parts"));
    let huge = format!("a IN ({})", vec!["'xxxxxxxxxx'"; 2000].join(","));
    assert!(refused(&huge).reason.contains("limit"));
    let chain = vec!["a = 1"; 200].join(" OR ");
    assert!(matches(&chain, &[("a", "1")]));
}

/// A valid expression, built from the grammar's parts.
fn expression() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec!["a", "b", "price", "TAGS", "$x", "_y"]);
    let text = "[a-z' ]{0,6}".prop_map(|s| format!("'{}'", s.replace('\'', "''")));
    let number = prop_oneof![
        any::<i32>().prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        (1u32..100_000, 1u32..1000).prop_map(|(a, b)| format!("{a}.{b}")),
    ];
    let op = prop::sample::select(vec!["=", "<>", ">", ">=", "<", "<="]);
    let leaf = prop_oneof![
        (name.clone(), op, number.clone()).prop_map(|(n, o, v)| format!("{n} {o} {v}")),
        (name.clone(), text.clone()).prop_map(|(n, t)| format!("{n} = {t}")),
        (
            name.clone(),
            prop::collection::vec(text.clone(), 1..4),
            any::<bool>()
        )
            .prop_map(|(n, list, not)| format!(
                "{n} {}IN ({})",
                if not { "NOT " } else { "" },
                list.join(", ")
            )),
        (name.clone(), 0i32..100, 0i32..100, any::<bool>()).prop_map(|(n, a, b, not)| {
            let (lo, hi) = (a.min(b), a.max(b));
            format!("{n} {}BETWEEN {lo} AND {hi}", if not { "NOT " } else { "" })
        }),
        (name.clone(), any::<bool>())
            .prop_map(|(n, not)| format!("{n} IS {}NULL", if not { "NOT " } else { "" })),
        (
            name.clone(),
            prop::sample::select(vec!["CONTAINS", "STARTSWITH", "ENDSWITH"]),
            text,
            any::<bool>()
        )
            .prop_map(|(n, o, t, not)| format!("{n} {}{o} {t}", if not { "NOT " } else { "" })),
        Just("TRUE".to_string()),
        name.prop_map(String::from),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(l, r)| format!("{l} AND {r}")),
            (inner.clone(), inner.clone()).prop_map(|(l, r)| format!("({l}) or ({r})")),
            inner.prop_map(|e| format!("NOT ({e})")),
        ]
    })
}

fn property_sets() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(vec!["a", "b", "price", "TAGS", "$x", "_y"]).prop_map(String::from),
        prop_oneof![
            "[a-z ]{0,4}",
            any::<i64>().prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| v.to_string()),
            Just("true".to_string()),
        ],
        0..6,
    )
}

proptest! {
    /// Any text compiles or is refused, and what compiles evaluates, without a panic.
    #[test]
    fn any_text_compiles_or_is_refused(text in "\\PC{0,80}", p in property_sets()) {
        if let Ok(selector) = Selector::compile(&text) {
            let _ = selector.evaluate(&p);
        }
    }

    /// Text made of the grammar's own tokens, shuffled: still no panic.
    #[test]
    fn token_soup_never_panics(
        words in prop::collection::vec(prop::sample::select(vec![
            "a", "b", "=", "<>", ">", "<=", "(", ")", ",", "-", "+", "NOT", "AND", "OR", "IN",
            "BETWEEN", "IS", "NULL", "TRUE", "FALSE", "CONTAINS", "'x'", "1", "2.5", "3000000000",
        ]), 0..30),
        p in property_sets(),
    ) {
        if let Ok(selector) = Selector::compile(&words.join(" ")) {
            let _ = selector.evaluate(&p);
        }
    }

    /// Every valid expression compiles, prints as an expression that compiles to the same
    /// selector, and both give the same answer for any properties.
    #[test]
    fn valid_expressions_compile_and_print_back(text in expression(), p in property_sets()) {
        let selector = Selector::compile(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        let printed = selector.to_string();
        let again = Selector::compile(&printed).map_err(|e| TestCaseError::fail(format!("{printed}: {e}")))?;
        prop_assert_eq!(&again, &selector, "{} printed as {}", text, printed);
        prop_assert_eq!(again.evaluate(&p), selector.evaluate(&p));
    }
}
