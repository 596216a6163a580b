//! Integer arithmetic found in histogram definition fields.
//!
//! Old `Histograms.json` files write some bounds as C++ expressions (`"32 * 1024"`,
//! `"80 + 1"`) or symbolic constants (`"JS::gcreason::NUM_TELEMETRY_REASONS"`). The
//! old Python tools substituted the constants and `eval`'d the rest; this module owns
//! that evaluation, and only that: a small recursive-descent parser over `+ - * /`,
//! unary signs and parentheses on `i64`, with the two constants the old system knew.
//! It never panics: overflow, division by zero, unknown names and deep nesting are
//! [`ExprError`]s. Deciding what a field means is `histdefs`'s business.

use thiserror::Error;

/// The symbolic constants the old system substituted before evaluating.
const CONSTANTS: &[(&str, i64)] = &[
    ("JS::gcreason::NUM_TELEMETRY_REASONS", 101),
    ("mozilla::StartupTimeline::MAX_EVENT_ID", 12),
];

/// Nesting beyond this (parentheses or unary signs) is refused, so a hostile field
/// cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExprError {
    /// The text holds no expression at all.
    #[error("empty expression")]
    Empty,
    /// A character that is not part of the grammar.
    #[error("unexpected character `{ch}` at byte {pos}")]
    UnexpectedChar {
        /// The character.
        ch: char,
        /// Its byte offset in the expression.
        pos: usize,
    },
    /// The expression stops where an operand or `)` was expected.
    #[error("unexpected end of expression")]
    UnexpectedEnd,
    /// A well-formed expression followed by more text.
    #[error("unexpected `{rest}` after the expression")]
    Trailing {
        /// The text left over.
        rest: String,
    },
    /// A name that is not one of the known constants.
    #[error("unknown name `{0}`")]
    UnknownName(String),
    /// A literal with a leading zero: Python 2 read it as octal, so refuse to guess.
    #[error("number `{0}` has a leading zero")]
    LeadingZero(String),
    /// A result or literal outside `i64`.
    #[error("integer overflow")]
    Overflow,
    /// Division by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// Parentheses or signs nested deeper than the parser accepts.
    #[error("expression nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Evaluate `text` as integer arithmetic.
///
/// Grammar: `+ - * /` with the usual precedence, left-associative; unary `+`/`-`;
/// parentheses; decimal literals; the names `JS::gcreason::NUM_TELEMETRY_REASONS`
/// (101) and `mozilla::StartupTimeline::MAX_EVENT_ID` (12). `/` is integer division
/// rounding toward negative infinity, as Python 2's `/` on integers did.
pub fn eval(text: &str) -> Result<i64, ExprError> {
    let mut p = Parser {
        src: text.as_bytes(),
        text,
        pos: 0,
        depth: 0,
    };
    p.skip_ws();
    if p.pos == p.src.len() {
        return Err(ExprError::Empty);
    }
    let value = p.expr()?;
    p.skip_ws();
    if p.pos < p.src.len() {
        return Err(ExprError::Trailing {
            rest: text[p.pos..].to_string(),
        });
    }
    Ok(value)
}

struct Parser<'a> {
    src: &'a [u8],
    text: &'a str,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.src.len() && matches!(self.src[self.pos], b' ' | b'\t') {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.src.get(self.pos).copied()
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(ExprError::TooDeep)
        } else {
            Ok(())
        }
    }

    fn unexpected(&self) -> ExprError {
        match self.text[self.pos..].chars().next() {
            Some(ch) => ExprError::UnexpectedChar { ch, pos: self.pos },
            None => ExprError::UnexpectedEnd,
        }
    }

    /// expr := term (('+' | '-') term)*
    fn expr(&mut self) -> Result<i64, ExprError> {
        let mut acc = self.term()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.pos += 1;
            let rhs = self.term()?;
            acc = if op == b'+' {
                acc.checked_add(rhs)
            } else {
                acc.checked_sub(rhs)
            }
            .ok_or(ExprError::Overflow)?;
        }
        Ok(acc)
    }

    /// term := factor (('*' | '/') factor)*
    fn term(&mut self) -> Result<i64, ExprError> {
        let mut acc = self.factor()?;
        while let Some(op @ (b'*' | b'/')) = self.peek() {
            self.pos += 1;
            let rhs = self.factor()?;
            acc = if op == b'*' {
                acc.checked_mul(rhs).ok_or(ExprError::Overflow)?
            } else {
                floor_div(acc, rhs)?
            };
        }
        Ok(acc)
    }

    /// factor := ('+' | '-') factor | number | name | '(' expr ')'
    fn factor(&mut self) -> Result<i64, ExprError> {
        self.enter()?;
        let value = match self.peek() {
            None => Err(ExprError::UnexpectedEnd),
            Some(b'-') => {
                self.pos += 1;
                self.factor()
                    .and_then(|v| v.checked_neg().ok_or(ExprError::Overflow))
            }
            Some(b'+') => {
                self.pos += 1;
                self.factor()
            }
            Some(b'(') => {
                self.pos += 1;
                let v = self.expr()?;
                match self.peek() {
                    Some(b')') => {
                        self.pos += 1;
                        Ok(v)
                    }
                    _ => Err(self.unexpected()),
                }
            }
            Some(b'0'..=b'9') => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => self.name(),
            Some(_) => Err(self.unexpected()),
        };
        self.depth -= 1;
        value
    }

    fn number(&mut self) -> Result<i64, ExprError> {
        let start = self.pos;
        while self.pos < self.src.len() && self.src[self.pos].is_ascii_digit() {
            self.pos += 1;
        }
        let digits = &self.text[start..self.pos];
        if digits.len() > 1 && digits.starts_with('0') {
            return Err(ExprError::LeadingZero(digits.to_string()));
        }
        digits
            .bytes()
            .try_fold(0i64, |acc, d| {
                acc.checked_mul(10)?.checked_add(i64::from(d - b'0'))
            })
            .ok_or(ExprError::Overflow)
    }

    fn name(&mut self) -> Result<i64, ExprError> {
        let start = self.pos;
        while self.pos < self.src.len()
            && (self.src[self.pos].is_ascii_alphanumeric()
                || matches!(self.src[self.pos], b'_' | b':'))
        {
            self.pos += 1;
        }
        let name = &self.text[start..self.pos];
        CONSTANTS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
            .ok_or_else(|| ExprError::UnknownName(name.to_string()))
    }
}

/// Integer division rounding toward negative infinity (Python 2 semantics).
fn floor_div(a: i64, b: i64) -> Result<i64, ExprError> {
    if b == 0 {
        return Err(ExprError::DivisionByZero);
    }
    let q = a.checked_div(b).ok_or(ExprError::Overflow)?;
    // `checked_div` succeeded, so `checked_rem` cannot fail.
    let r = a.checked_rem(b).unwrap_or(0);
    Ok(if r != 0 && ((r < 0) != (b < 0)) {
        q - 1
    } else {
        q
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values() {
        let table: &[(&str, i64)] = &[
            ("0", 0),
            ("1000", 1000),
            ("32 * 1024", 32768),
            ("60 * 60 * 1000", 3_600_000),
            ("80 + 1", 81),
            ("16 * 1024 * 1024", 16_777_216),
            ("80 * 25", 2000),
            ("JS::gcreason::NUM_TELEMETRY_REASONS", 101),
            ("mozilla::StartupTimeline::MAX_EVENT_ID", 12),
            ("JS::gcreason::NUM_TELEMETRY_REASONS + 1", 102),
            ("2 + 3 * 4", 14),
            ("(2 + 3) * 4", 20),
            ("10 - 4 - 3", 3),
            ("100 / 10 / 5", 2),
            ("7 / 2", 3),
            ("-7 / 2", -4),
            ("7 / -2", -4),
            ("-7 / -2", 3),
            ("-(3)", -3),
            ("+5", 5),
            ("- -5", 5),
            ("\t 1*( (2) )\t", 2),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775807 - 1", i64::MIN),
        ];
        for &(text, want) in table {
            assert_eq!(eval(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn errors() {
        use ExprError::*;
        let table: &[(&str, ExprError)] = &[
            ("", Empty),
            ("   ", Empty),
            ("1 +", UnexpectedEnd),
            ("(1 + 2", UnexpectedEnd),
            ("1 2", Trailing { rest: "2".into() }),
            ("1)", Trailing { rest: ")".into() }),
            ("1 % 2", Trailing { rest: "% 2".into() }),
            ("1 + é", UnexpectedChar { ch: 'é', pos: 4 }),
            ("1.5", Trailing { rest: ".5".into() }),
            ("FOO", UnknownName("FOO".into())),
            ("010", LeadingZero("010".into())),
            ("1 / 0", DivisionByZero),
            ("1 / (2 - 2)", DivisionByZero),
            ("9223372036854775808", Overflow),
            ("9223372036854775807 + 1", Overflow),
            ("-9223372036854775807 - 2", Overflow),
            ("4294967296 * 4294967296", Overflow),
            ("(-9223372036854775807 - 1) / -1", Overflow),
            ("-(-9223372036854775807 - 1)", Overflow),
        ];
        for (text, want) in table {
            assert_eq!(eval(text).as_ref(), Err(want), "{text:?}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(eval(&deep), Err(ExprError::TooDeep));
        assert_eq!(eval(&"-".repeat(100_000)), Err(ExprError::TooDeep));
        let ok = format!("{}1{}", "(".repeat(50), ")".repeat(50));
        assert_eq!(eval(&ok), Ok(1));
    }

    #[test]
    fn messages_name_the_bad_value() {
        assert_eq!(eval("FOO").unwrap_err().to_string(), "unknown name `FOO`");
        assert_eq!(
            eval("1 $").unwrap_err().to_string(),
            "unexpected `$` after the expression"
        );
    }

    proptest! {
        #[test]
        fn never_panics(text in "[0-9 ()+*/a-zA-Z:_-]{0,40}") {
            let _ = eval(&text);
        }

        #[test]
        fn agrees_with_i128(a in -1_000_000i64..1_000_000, b in -1_000_000i64..1_000_000, c in 1i64..1000) {
            let got = eval(&format!("{a} * {b} + ({a} - {b}) / {c}")).unwrap();
            let want = i128::from(a) * i128::from(b) + (i128::from(a) - i128::from(b)).div_euclid(i128::from(c));
            prop_assert_eq!(i128::from(got), want);
        }
    }
}
