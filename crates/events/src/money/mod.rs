//! Exact money.
//!
//! Guarantees (decision 0003):
//! - Amounts and percentages are [`rust_decimal::Decimal`]s; no binary float is ever involved, on input,
//!   in arithmetic or on output. A JSON number such as `16.49` or an 18-decimal ETH amount reaches the
//!   decimal digit for digit, and input that cannot be held exactly is rejected, never rounded.
//! - [`Amount`] is never negative; [`Percentage`] lies in `0..=100` with at most four decimals.
//! - Currencies come from two tables: ISO 4217 fiat currencies with their minor units ([`FiatCurrency`]) and
//!   the crypto assets the platform handles with their decimals ([`CryptoAsset`]).
//! - Canonical output of an amount or percentage is a JSON *string* holding the plain decimal with trailing
//!   zeros removed (`"16.49"`, `"0.16"`, `"1"`, `"0"`): no exponent, no float, one spelling per value.
//! - [`platform_fee`] is the one place where the platform fee is computed: rounded half-to-even to the
//!   currency's minor unit, and `fee + net == gross` exactly.
//!
//! Layout: `decimal` (strict parsing), `amount` ([`Amount`], [`Percentage`]), `currency` (tables),
//! `fee` ([`platform_fee`]).

mod amount;
mod currency;
mod decimal;
mod fee;

pub use amount::{Amount, Percentage};
pub use currency::{CryptoAsset, Currency, FiatCurrency};
pub use fee::{FeeSplit, platform_fee};
pub use rust_decimal::Decimal;

use crate::error::ContractErrorKind;

/// Why a value is not valid money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a decimal number in the accepted notation.
    #[error("`{0}` is not a decimal number")]
    Syntax(String),
    /// Below zero.
    #[error("{0} is negative")]
    Negative(Decimal),
    /// More decimal places than allowed.
    #[error("{value} has {found} decimal places, {what} allows {max}")]
    TooManyDecimals {
        /// The offending value.
        value: String,
        /// Its decimal places.
        found: u32,
        /// What sets the limit (a currency code, or `a percentage`).
        what: String,
        /// The limit.
        max: u32,
    },
    /// Too large to be held exactly.
    #[error("`{0}` is out of range")]
    OutOfRange(String),
    /// A percentage above 100.
    #[error("{0}% is above 100%")]
    PercentageAbove100(Decimal),
    /// A code that is not in the currency tables.
    #[error("unknown currency `{0}`")]
    UnknownCurrency(String),
    /// A crypto asset where a fiat currency is required, or the other way round.
    #[error("`{code}` is {is}; {expected} is required here")]
    WrongCurrencyKind {
        /// The code.
        code: String,
        /// What it is (`a crypto asset` / `a fiat currency`).
        is: &'static str,
        /// What was expected.
        expected: &'static str,
    },
}

impl MoneyError {
    /// The contract error kind this maps to.
    pub fn kind(&self) -> ContractErrorKind {
        match self {
            MoneyError::Syntax(_)
            | MoneyError::OutOfRange(_)
            | MoneyError::PercentageAbove100(_) => ContractErrorKind::InvalidValue,
            MoneyError::Negative(_) => ContractErrorKind::NegativeAmount,
            MoneyError::TooManyDecimals { .. } => ContractErrorKind::TooManyDecimals,
            MoneyError::UnknownCurrency(_) | MoneyError::WrongCurrencyKind { .. } => {
                ContractErrorKind::UnknownCurrency
            }
        }
    }

    pub(crate) fn at(&self, path: &str) -> crate::ContractError {
        crate::ContractError::at(self.kind(), path, self.to_string())
    }
}
