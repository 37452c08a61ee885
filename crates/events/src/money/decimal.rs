//! Strict, exact decimal parsing.
//!
//! Guarantees: the accepted notation is exactly JSON's number grammar
//! (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`), whether the value came as a JSON number or a string;
//! the result equals the written value digit for digit, or parsing fails. `rust_decimal`'s own `FromStr`
//! rounds digits beyond its 28-decimal scale and accepts no exponent, which is why this module exists.
//!
//! With serde_json's `arbitrary_precision` feature (enabled in the workspace) a JSON number that is not an
//! integer reaches a `Visitor` as a one-entry map `{"$serde_json::private::Number": "<digits>"}`; integers come
//! as `u64`/`i64`. Both are exact. A `f64` only arrives if that feature is off, and is refused.

use std::fmt;

use rust_decimal::Decimal;
use serde::de;

use super::MoneyError;
use crate::error::de_error;

/// Largest mantissa a `Decimal` holds: 2^96 - 1.
const MAX_MANTISSA: u128 = (1 << 96) - 1;
/// Largest scale a `Decimal` holds.
const MAX_SCALE: i64 = 28;
/// serde_json's private marker for an arbitrary-precision number (see module docs).
const SERDE_JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Parses `input` exactly; the result is normalised (no trailing zeros) and never negative zero.
pub(crate) fn parse_exact(input: &str) -> Result<Decimal, MoneyError> {
    let syntax = || MoneyError::Syntax(truncate(input));
    let bytes = input.as_bytes();
    let (negative, rest) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    let int_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let (int, rest) = rest.split_at(int_len);
    if int.is_empty() || (int.len() > 1 && int[0] == b'0') {
        return Err(syntax());
    }
    let (frac, rest) = match rest.split_first() {
        Some((b'.', after)) => {
            let len = after.iter().take_while(|b| b.is_ascii_digit()).count();
            if len == 0 {
                return Err(syntax());
            }
            after.split_at(len)
        }
        _ => (&[][..], rest),
    };
    let exponent: i64 = match rest.split_first() {
        None => 0,
        Some((b'e' | b'E', after)) => {
            let (sign, digits) = match after.split_first() {
                Some((b'-', d)) => (-1, d),
                Some((b'+', d)) => (1, d),
                _ => (1, after),
            };
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(syntax());
            }
            // Far beyond any exponent that could still give a representable, non-zero value.
            if digits.len() > 4 {
                return if int.iter().chain(frac).all(|&d| d == b'0') {
                    Ok(Decimal::ZERO)
                } else {
                    Err(MoneyError::OutOfRange(truncate(input)))
                };
            }
            sign * digits
                .iter()
                .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
        }
        Some(_) => return Err(syntax()),
    };

    let digits = || int.iter().chain(frac).copied();
    let trailing_zeros = digits().rev().take_while(|&d| d == b'0').count();
    let significant: Vec<u8> = digits().skip_while(|&d| d == b'0').collect();
    let significant = &significant[..significant.len().saturating_sub(trailing_zeros)];
    if significant.is_empty() {
        return Ok(Decimal::ZERO);
    }
    // 29 digits is the most a 96-bit mantissa can have; more can only be held by rounding.
    if significant.len() > 29 {
        return Err(if int.len() > 29 {
            MoneyError::OutOfRange(truncate(input))
        } else {
            too_precise(input, frac.len() as i64 - exponent)
        });
    }
    let mut mantissa = significant
        .iter()
        .fold(0u128, |acc, d| acc * 10 + u128::from(d - b'0'));
    let mut scale = frac.len() as i64 - exponent - trailing_zeros as i64;
    if scale > MAX_SCALE {
        return Err(too_precise(input, scale));
    }
    while scale < 0 {
        mantissa = mantissa
            .checked_mul(10)
            .ok_or_else(|| MoneyError::OutOfRange(truncate(input)))?;
        scale += 1;
    }
    if mantissa > MAX_MANTISSA {
        return Err(MoneyError::OutOfRange(truncate(input)));
    }
    let signed = if negative {
        -(mantissa as i128)
    } else {
        mantissa as i128
    };
    Decimal::try_from_i128_with_scale(signed, scale as u32)
        .map_err(|_| MoneyError::OutOfRange(truncate(input)))
}

fn too_precise(input: &str, found: i64) -> MoneyError {
    MoneyError::TooManyDecimals {
        value: truncate(input),
        found: found.clamp(0, i64::from(u32::MAX)) as u32,
        what: "a decimal".to_owned(),
        max: MAX_SCALE as u32,
    }
}

/// Error messages quote the input; a hostile input must not make them huge.
fn truncate(input: &str) -> String {
    match input.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &input[..at]),
        None => input.to_owned(),
    }
}

/// Deserialises a JSON number or string into an exact `Decimal`; `what` names the value for messages.
pub(crate) struct DecimalVisitor(pub &'static str);

impl<'de> de::Visitor<'de> for DecimalVisitor {
    type Value = Decimal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} as a decimal string or JSON number", self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
        parse_exact(v).map_err(|e| de_error(e.kind(), e))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
        Err(de_error(
            crate::ContractErrorKind::WrongType,
            format_args!(
                "{} arrived as a binary float ({v}); money is only read exactly",
                self.0
            ),
        ))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Decimal, A::Error> {
        match map.next_key::<&str>()? {
            Some(SERDE_JSON_NUMBER_TOKEN) => {
                let digits: std::borrow::Cow<'de, str> = map.next_value()?;
                self.visit_str(&digits)
            }
            _ => Err(de::Error::invalid_type(de::Unexpected::Map, &self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn parses_exactly_and_normalises() {
        assert_eq!(parse_exact("16.49").unwrap(), d("16.49"));
        assert_eq!(parse_exact("16.4900").unwrap().to_string(), "16.49");
        assert_eq!(parse_exact("0").unwrap().to_string(), "0");
        assert_eq!(parse_exact("-0.0").unwrap().to_string(), "0");
        assert_eq!(parse_exact("1.649e1").unwrap(), d("16.49"));
        assert_eq!(parse_exact("1E-7").unwrap().to_string(), "0.0000001");
        assert_eq!(parse_exact("1e3").unwrap().to_string(), "1000");
        assert_eq!(
            parse_exact("0.000000000000000001").unwrap().to_string(),
            "0.000000000000000001"
        );
        assert_eq!(parse_exact("-2.5").unwrap(), d("-2.5"));
        let eth = "1234567.123456789012345678";
        assert_eq!(parse_exact(eth).unwrap().to_string(), eth);
    }

    #[test]
    fn refuses_what_it_cannot_hold_exactly() {
        // 29 decimals: rust_decimal's FromStr would silently round this.
        assert!(matches!(
            parse_exact("0.00000000000000000000000000001"),
            Err(MoneyError::TooManyDecimals { .. })
        ));
        assert!(matches!(
            parse_exact("1.00000000000000000000000000001"),
            Err(MoneyError::TooManyDecimals { .. })
        ));
        // 28 decimals and 29 digits still fit a 96-bit mantissa, so this one is held exactly.
        assert_eq!(
            parse_exact("1.0000000000000000000000000001")
                .unwrap()
                .scale(),
            28
        );
        assert!(matches!(
            parse_exact("79228162514264337593543950336"),
            Err(MoneyError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_exact("1e40"),
            Err(MoneyError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_exact("1e99999"),
            Err(MoneyError::OutOfRange(_))
        ));
        assert_eq!(parse_exact("0e99999").unwrap(), Decimal::ZERO);
    }

    #[test]
    fn refuses_anything_outside_json_number_grammar() {
        for bad in [
            "", "-", "+1", "01", "1.", ".5", "1e", "1e+", "1.2.3", " 1", "1 ", "NaN", "1_000",
            "0x10", "١",
        ] {
            assert!(
                matches!(parse_exact(bad), Err(MoneyError::Syntax(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn json_numbers_arrive_exactly() {
        #[derive(serde::Deserialize)]
        struct W(#[serde(deserialize_with = "de_decimal")] Decimal);
        fn de_decimal<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
            d.deserialize_any(DecimalVisitor("amount"))
        }
        for text in [
            "16.49",
            "0.1",
            "123456789.123456789012345678",
            "18446744073709551615",
            "-3",
            "2.5e-3",
        ] {
            let W(value) = serde_json::from_str(text).unwrap();
            assert_eq!(value, parse_exact(text).unwrap(), "{text}");
        }
    }
}
