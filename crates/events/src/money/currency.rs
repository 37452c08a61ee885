//! The currency tables.
//!
//! Guarantees: a [`FiatCurrency`] is an ISO 4217 currency that has minor units (decimals), taken from the
//! `iso_currency` table, funds (`CLF`, `USN`, …) and units without minor units (`XAU`, `XDR`, …) excluded;
//! superseded codes (`HRK`) still decode so that history stays readable. A [`CryptoAsset`] is one of the
//! assets the platform settles, with its on-chain decimals. A [`Currency`] is either. Codes are upper case
//! and case-sensitive on the wire.

use std::borrow::Cow;
use std::fmt;

use iso_currency::IntoEnumIterator;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::MoneyError;
use crate::error::de_error;

/// An ISO 4217 fiat currency with minor units.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiatCurrency(iso_currency::Currency);

impl FiatCurrency {
    /// US dollar.
    pub const USD: FiatCurrency = FiatCurrency(iso_currency::Currency::USD);
    /// Euro.
    pub const EUR: FiatCurrency = FiatCurrency(iso_currency::Currency::EUR);
    /// Pound sterling.
    pub const GBP: FiatCurrency = FiatCurrency(iso_currency::Currency::GBP);

    /// Looks a code up; fails for unknown codes, funds, units without minor units and crypto assets.
    pub fn from_code(code: &str) -> Result<FiatCurrency, MoneyError> {
        match iso_currency::Currency::from_code(code) {
            Some(iso) if Self::is_accepted(iso) => Ok(FiatCurrency(iso)),
            _ if CryptoAsset::from_code(code).is_ok() => Err(MoneyError::WrongCurrencyKind {
                code: code.to_owned(),
                is: "a crypto asset",
                expected: "a fiat currency",
            }),
            _ => Err(MoneyError::UnknownCurrency(code.to_owned())),
        }
    }

    fn is_accepted(iso: iso_currency::Currency) -> bool {
        iso.exponent().is_some() && !iso.is_fund()
    }

    /// Every accepted fiat currency, in code order.
    pub fn all() -> impl Iterator<Item = FiatCurrency> {
        let mut all: Vec<_> = iso_currency::Currency::iter()
            .filter(|c| Self::is_accepted(*c))
            .map(FiatCurrency)
            .collect();
        all.sort_by_key(|c| c.code());
        all.into_iter()
    }

    /// The ISO 4217 alphabetic code.
    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Decimal places of the minor unit (2 for USD, 0 for JPY, 3 for KWD).
    pub fn decimals(self) -> u32 {
        // `from_code` only lets currencies with an exponent in.
        self.0.exponent().map_or(0, u32::from)
    }
}

/// A crypto asset the platform handles.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum CryptoAsset {
    /// Bitcoin, 8 decimals (satoshi).
    Btc,
    /// Ether, 18 decimals (wei).
    Eth,
    /// Tether USD, 6 decimals on every network the platform uses.
    Usdt,
    /// USD Coin, 6 decimals on every network the platform uses.
    Usdc,
}

impl CryptoAsset {
    /// The table: every asset with its code and decimals. Adding an asset means adding a row here and its
    /// networks in [`crate::payload::Network::carries`].
    pub const ALL: [CryptoAsset; 4] = [
        CryptoAsset::Btc,
        CryptoAsset::Eth,
        CryptoAsset::Usdt,
        CryptoAsset::Usdc,
    ];

    /// The ticker used on the wire.
    pub const fn code(self) -> &'static str {
        match self {
            CryptoAsset::Btc => "BTC",
            CryptoAsset::Eth => "ETH",
            CryptoAsset::Usdt => "USDT",
            CryptoAsset::Usdc => "USDC",
        }
    }

    /// Decimal places of the smallest on-chain unit.
    pub const fn decimals(self) -> u32 {
        match self {
            CryptoAsset::Btc => 8,
            CryptoAsset::Eth => 18,
            CryptoAsset::Usdt | CryptoAsset::Usdc => 6,
        }
    }

    /// Looks a ticker up; fails for unknown tickers and fiat currencies.
    pub fn from_code(code: &str) -> Result<CryptoAsset, MoneyError> {
        if let Some(asset) = Self::ALL.into_iter().find(|a| a.code() == code) {
            return Ok(asset);
        }
        match iso_currency::Currency::from_code(code) {
            Some(_) => Err(MoneyError::WrongCurrencyKind {
                code: code.to_owned(),
                is: "a fiat currency",
                expected: "a crypto asset",
            }),
            None => Err(MoneyError::UnknownCurrency(code.to_owned())),
        }
    }
}

/// Either a fiat currency or a crypto asset: what a settlement is paid in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Currency {
    /// A fiat currency.
    Fiat(FiatCurrency),
    /// A crypto asset.
    Crypto(CryptoAsset),
}

impl Currency {
    /// Looks a code up in both tables (their codes do not overlap).
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        if let Ok(asset) = CryptoAsset::from_code(code) {
            return Ok(Currency::Crypto(asset));
        }
        match FiatCurrency::from_code(code) {
            Ok(fiat) => Ok(Currency::Fiat(fiat)),
            Err(_) => Err(MoneyError::UnknownCurrency(code.to_owned())),
        }
    }

    /// The code used on the wire.
    pub fn code(self) -> &'static str {
        match self {
            Currency::Fiat(fiat) => fiat.code(),
            Currency::Crypto(asset) => asset.code(),
        }
    }

    /// Decimal places of the smallest unit: the minor unit for fiat, the on-chain unit for crypto.
    pub fn decimals(self) -> u32 {
        match self {
            Currency::Fiat(fiat) => fiat.decimals(),
            Currency::Crypto(asset) => asset.decimals(),
        }
    }
}

impl From<FiatCurrency> for Currency {
    fn from(fiat: FiatCurrency) -> Self {
        Currency::Fiat(fiat)
    }
}

impl From<CryptoAsset> for Currency {
    fn from(asset: CryptoAsset) -> Self {
        Currency::Crypto(asset)
    }
}

macro_rules! code_serde {
    ($ty:ty, $expecting:literal, $name:literal, $description:literal, $codes:expr) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.code())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.code())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl de::Visitor<'_> for Visitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        <$ty>::from_code(v).map_err(|e| de_error(e.kind(), e))
                    }
                }
                deserializer.deserialize_str(Visitor)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let codes: Vec<&'static str> = $codes;
                json_schema!({ "type": "string", "description": $description, "enum": codes })
            }
        }
    };
}

code_serde!(
    FiatCurrency,
    "an ISO 4217 currency code",
    "FiatCurrency",
    "An ISO 4217 currency with minor units.",
    FiatCurrency::all().map(FiatCurrency::code).collect()
);
code_serde!(
    CryptoAsset,
    "a crypto asset ticker",
    "CryptoAsset",
    "A crypto asset: BTC (8 decimals), ETH (18), USDT (6), USDC (6).",
    CryptoAsset::ALL.iter().map(|a| a.code()).collect()
);
code_serde!(
    Currency,
    "a currency code or crypto asset ticker",
    "Currency",
    "A crypto asset ticker or an ISO 4217 currency with minor units.",
    CryptoAsset::ALL
        .iter()
        .map(|a| a.code())
        .chain(FiatCurrency::all().map(FiatCurrency::code))
        .collect()
);

impl fmt::Debug for FiatCurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContractErrorKind;

    #[test]
    fn fiat_minor_units_come_from_iso_4217() {
        let decimals = |code| FiatCurrency::from_code(code).unwrap().decimals();
        assert_eq!(decimals("USD"), 2);
        assert_eq!(decimals("JPY"), 0);
        assert_eq!(decimals("KWD"), 3);
        assert_eq!(decimals("HRK"), 2, "superseded codes stay readable");
        for not_money in ["XAU", "XDR", "XXX", "CLF", "usd", "US", "ZZZ"] {
            assert!(FiatCurrency::from_code(not_money).is_err(), "{not_money}");
        }
        assert!(FiatCurrency::all().count() > 150);
    }

    #[test]
    fn crypto_assets_have_their_on_chain_decimals() {
        let decimals: Vec<_> = CryptoAsset::ALL
            .iter()
            .map(|a| (a.code(), a.decimals()))
            .collect();
        assert_eq!(
            decimals,
            [("BTC", 8), ("ETH", 18), ("USDT", 6), ("USDC", 6)]
        );
    }

    #[test]
    fn codes_of_the_other_table_are_named_in_the_error() {
        let err = FiatCurrency::from_code("USDT").unwrap_err();
        assert!(err.to_string().contains("crypto asset"), "{err}");
        assert_eq!(err.kind(), ContractErrorKind::UnknownCurrency);
        let err = CryptoAsset::from_code("USD").unwrap_err();
        assert!(err.to_string().contains("fiat currency"), "{err}");
        assert_eq!(
            Currency::from_code("BTC").unwrap(),
            Currency::Crypto(CryptoAsset::Btc)
        );
        assert_eq!(
            Currency::from_code("EUR").unwrap(),
            Currency::Fiat(FiatCurrency::EUR)
        );
        assert_eq!(
            Currency::from_code("DOGE").unwrap_err().kind(),
            ContractErrorKind::UnknownCurrency
        );
    }

    #[test]
    fn serde_uses_codes() {
        assert_eq!(
            serde_json::to_string(&Currency::Crypto(CryptoAsset::Usdc)).unwrap(),
            "\"USDC\""
        );
        assert_eq!(
            serde_json::from_str::<FiatCurrency>("\"GBP\"").unwrap(),
            FiatCurrency::GBP
        );
        assert!(serde_json::from_str::<FiatCurrency>("\"gbp\"").is_err());
    }
}
