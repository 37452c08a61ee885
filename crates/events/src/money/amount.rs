//! [`Amount`] and [`Percentage`].
//!
//! Guarantees: an `Amount` is a normalised, non-negative exact decimal; a `Percentage` is a normalised exact
//! decimal in `0..=100` with at most [`Percentage::MAX_DECIMALS`] places. Both read a JSON number or string
//! exactly and write the canonical decimal string (see [`crate::money`]). Whether an amount has too many
//! decimals depends on its currency, a sibling field; payloads check that with [`Amount::check_decimals`].

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::decimal::{DecimalVisitor, parse_exact};
use super::{Currency, MoneyError};
use crate::error::de_error;

/// JSON Schema pattern of the accepted decimal notation (JSON's number grammar, without a sign).
const DECIMAL_PATTERN: &str = r"^(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$";

/// A non-negative exact amount of money in the major unit of some currency (`16.49` USD, `0.00042` BTC).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Amount(Decimal);

impl Amount {
    /// Zero.
    pub const ZERO: Amount = Amount(Decimal::ZERO);

    /// Wraps a decimal; fails if it is negative.
    pub fn new(value: Decimal) -> Result<Amount, MoneyError> {
        if value.is_sign_negative() && !value.is_zero() {
            return Err(MoneyError::Negative(value));
        }
        Ok(Amount(value.normalize()))
    }

    /// The amount as a decimal.
    pub const fn as_decimal(&self) -> Decimal {
        self.0
    }

    /// Number of decimal places actually used (`16.40` has 1).
    pub const fn decimals(&self) -> u32 {
        self.0.scale()
    }

    /// Whether the amount is zero.
    pub const fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    /// Fails if the amount has more decimal places than `currency` allows.
    pub fn check_decimals(&self, currency: Currency) -> Result<(), MoneyError> {
        if self.decimals() > currency.decimals() {
            return Err(MoneyError::TooManyDecimals {
                value: self.to_string(),
                found: self.decimals(),
                what: currency.code().to_owned(),
                max: currency.decimals(),
            });
        }
        Ok(())
    }

    /// `self + other`, or `None` if the result cannot be held exactly.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0
            .checked_add(other.0)
            .map(|sum| Amount(sum.normalize()))
    }

    /// `self - other`, or `None` if the result would be negative.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        let difference = self.0.checked_sub(other.0)?;
        Amount::new(difference).ok()
    }
}

impl FromStr for Amount {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Amount, MoneyError> {
        Amount::new(parse_exact(s)?)
    }
}

impl TryFrom<Decimal> for Amount {
    type Error = MoneyError;
    fn try_from(value: Decimal) -> Result<Amount, MoneyError> {
        Amount::new(value)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Amount, D::Error> {
        let value = deserializer.deserialize_any(DecimalVisitor("an amount"))?;
        Amount::new(value).map_err(|e| de_error(e.kind(), e))
    }
}

impl JsonSchema for Amount {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Amount")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A non-negative exact decimal amount in the major unit of its currency. Written as a string \
                            with trailing zeros removed (\"16.49\"); read from a string or a JSON number, exactly. \
                            At most as many decimals as the currency has (checked by the decoder, not expressible here).",
            "anyOf": [
                { "type": "string", "pattern": DECIMAL_PATTERN },
                { "type": "number", "minimum": 0 }
            ],
            "examples": ["16.49"]
        })
    }
}

/// A percentage, `1` meaning 1 % (so `fee_percentage: "1"` takes one hundredth of the gross amount).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Percentage(Decimal);

impl Percentage {
    /// At most this many decimal places (`1.2345` %), enough for any fee schedule and small enough that fee
    /// arithmetic stays exact.
    pub const MAX_DECIMALS: u32 = 4;

    /// Wraps a decimal; fails if it is negative, above 100 or too precise.
    pub fn new(value: Decimal) -> Result<Percentage, MoneyError> {
        let value = value.normalize();
        if value.is_sign_negative() && !value.is_zero() {
            return Err(MoneyError::Negative(value));
        }
        if value > Decimal::ONE_HUNDRED {
            return Err(MoneyError::PercentageAbove100(value));
        }
        if value.scale() > Self::MAX_DECIMALS {
            return Err(MoneyError::TooManyDecimals {
                value: value.to_string(),
                found: value.scale(),
                what: "a percentage".to_owned(),
                max: Self::MAX_DECIMALS,
            });
        }
        Ok(Percentage(value))
    }

    /// The percentage as a decimal (`1` for 1 %).
    pub const fn as_decimal(&self) -> Decimal {
        self.0
    }
}

impl FromStr for Percentage {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Percentage, MoneyError> {
        Percentage::new(parse_exact(s)?)
    }
}

impl fmt::Display for Percentage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Percentage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl Serialize for Percentage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Percentage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Percentage, D::Error> {
        let value = deserializer.deserialize_any(DecimalVisitor("a percentage"))?;
        Percentage::new(value).map_err(|e| de_error(e.kind(), e))
    }
}

impl JsonSchema for Percentage {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Percentage")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A percentage from 0 to 100 (\"1\" is 1 %) with at most 4 decimals. Written as a string \
                            with trailing zeros removed; read from a string or a JSON number, exactly.",
            "anyOf": [
                { "type": "string", "pattern": DECIMAL_PATTERN },
                { "type": "number", "minimum": 0, "maximum": 100 }
            ],
            "examples": ["1"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContractErrorKind;
    use crate::money::{CryptoAsset, FiatCurrency};
    use proptest::prelude::*;

    #[test]
    fn reads_numbers_and_strings_exactly_and_writes_canonical_strings() {
        let from_number: Amount = serde_json::from_str("16.49").unwrap();
        let from_string: Amount = serde_json::from_str("\"16.490\"").unwrap();
        assert_eq!(from_number, from_string);
        assert_eq!(serde_json::to_string(&from_number).unwrap(), "\"16.49\"");
        let wei: Amount = serde_json::from_str("0.123456789012345678").unwrap();
        assert_eq!(
            serde_json::to_string(&wei).unwrap(),
            "\"0.123456789012345678\""
        );
        let whole: Amount = serde_json::from_str("100").unwrap();
        assert_eq!(serde_json::to_string(&whole).unwrap(), "\"100\"");
    }

    #[test]
    fn negative_amounts_are_rejected_with_their_kind() {
        for text in ["-1", "-0.01", "\"-5\""] {
            let err = serde_json::from_str::<Amount>(text).unwrap_err();
            let contract = crate::error::from_serde(&err, "$".into());
            assert_eq!(contract.kind(), ContractErrorKind::NegativeAmount, "{text}");
        }
        assert_eq!(serde_json::from_str::<Amount>("-0").unwrap(), Amount::ZERO);
    }

    #[test]
    fn decimals_are_checked_against_the_currency() {
        let amount: Amount = "16.499".parse().unwrap();
        assert!(
            amount
                .check_decimals(Currency::Fiat(FiatCurrency::USD))
                .is_err()
        );
        assert!(
            amount
                .check_decimals(Currency::Crypto(CryptoAsset::Usdt))
                .is_ok()
        );
        let yen: Amount = "1.5".parse().unwrap();
        assert!(
            yen.check_decimals(Currency::Fiat(FiatCurrency::from_code("JPY").unwrap()))
                .is_err()
        );
    }

    #[test]
    fn percentages_are_bounded() {
        assert_eq!("1.0".parse::<Percentage>().unwrap().to_string(), "1");
        assert!(matches!(
            "100.01".parse::<Percentage>(),
            Err(MoneyError::PercentageAbove100(_))
        ));
        assert!(matches!(
            "-1".parse::<Percentage>(),
            Err(MoneyError::Negative(_))
        ));
        assert!(matches!(
            "0.00001".parse::<Percentage>(),
            Err(MoneyError::TooManyDecimals { .. })
        ));
    }

    proptest! {
        #[test]
        fn amount_json_round_trip(mantissa in 0i64..i64::MAX, scale in 0u32..=18, as_number in any::<bool>()) {
            let amount = Amount::new(Decimal::new(mantissa, scale)).unwrap();
            let canonical = serde_json::to_string(&amount).unwrap();
            prop_assert_eq!(serde_json::from_str::<Amount>(&canonical).unwrap(), amount);
            // The same digits as a bare JSON number must give the same value: no float on the way.
            let text = if as_number { Decimal::new(mantissa, scale).to_string() } else { canonical.clone() };
            let parsed = serde_json::from_str::<Amount>(&text).unwrap();
            prop_assert_eq!(parsed, amount);
            prop_assert_eq!(serde_json::to_string(&parsed).unwrap(), canonical);
        }

        #[test]
        fn checked_arithmetic_is_exact(a in 0i64..1_000_000_000_000, b in 0i64..1_000_000_000_000, scale in 0u32..=18) {
            let x = Amount::new(Decimal::new(a, scale)).unwrap();
            let y = Amount::new(Decimal::new(b, scale)).unwrap();
            let sum = x.checked_add(y).unwrap();
            prop_assert_eq!(sum.checked_sub(y), Some(x));
            prop_assert_eq!(x.checked_sub(y).is_some(), a >= b);
        }
    }
}
