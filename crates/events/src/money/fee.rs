//! The platform fee.
//!
//! Guarantees (decision 0003): [`platform_fee`] is the only fee computation; settlement uses it to create
//! settlements and the decoder uses it to check them. The fee is `gross × percentage / 100`, rounded to the
//! currency's smallest unit **half to even** (banker's rounding: unbiased over many settlements); the net is
//! `gross − fee`, so `fee + net == gross` exactly and `0 ≤ fee ≤ gross`. The arithmetic is done on integers
//! (128-bit) so no intermediate step rounds.

use rust_decimal::Decimal;

use super::{Amount, Currency, MoneyError, Percentage};

/// A gross amount split into the platform's fee and the merchant's net amount.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FeeSplit {
    /// The platform's fee.
    pub fee: Amount,
    /// What the merchant receives: gross minus fee.
    pub net: Amount,
}

/// Splits `gross` into fee and net at `fee_percentage`, in `currency`.
///
/// Fails only if `gross` has more decimals than `currency` allows, or is too large for the fee to be held
/// exactly (beyond 10^10 units of an 18-decimal asset; far beyond any real payment).
///
/// ```
/// use events::money::{platform_fee, Currency, FiatCurrency};
/// let split = platform_fee("16.49".parse()?, "1.0".parse()?, Currency::Fiat(FiatCurrency::USD))?;
/// assert_eq!((split.fee.to_string(), split.net.to_string()), ("0.16".into(), "16.33".into()));
/// # Ok::<(), events::money::MoneyError>(())
/// ```
pub fn platform_fee(
    gross: Amount,
    fee_percentage: Percentage,
    currency: Currency,
) -> Result<FeeSplit, MoneyError> {
    gross.check_decimals(currency)?;
    let overflow = || MoneyError::OutOfRange(format!("{gross} × {fee_percentage}%"));
    let (g, p) = (gross.as_decimal(), fee_percentage.as_decimal());
    // Both are normalised and non-negative: mantissa < 2^96 and percentage mantissa ≤ 100·10^4, so the
    // product is < 2^116 and fits.
    let product = g.mantissa().unsigned_abs() * p.mantissa().unsigned_abs();
    // The exact fee is product / 10^exact_scale; "/ 100" turns the percentage into a fraction.
    let exact_scale = g.scale() + p.scale() + 2;
    let target_scale = currency.decimals();
    let (units, scale) = if exact_scale <= target_scale {
        (product, exact_scale)
    } else {
        let divisor = 10u128.pow(exact_scale - target_scale);
        let (quotient, remainder) = (product / divisor, product % divisor);
        let round_up = match (remainder * 2).cmp(&divisor) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => quotient % 2 == 1,
            std::cmp::Ordering::Less => false,
        };
        (quotient + u128::from(round_up), target_scale)
    };
    let units = i128::try_from(units).map_err(|_| overflow())?;
    let fee = Decimal::try_from_i128_with_scale(units, scale).map_err(|_| overflow())?;
    let fee = Amount::new(fee)?;
    let net = gross.checked_sub(fee).ok_or_else(overflow)?;
    Ok(FeeSplit { fee, net })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::{CryptoAsset, FiatCurrency};
    use proptest::prelude::*;
    use rust_decimal::RoundingStrategy;

    fn split(gross: &str, pct: &str, currency: Currency) -> (String, String) {
        let s = platform_fee(gross.parse().unwrap(), pct.parse().unwrap(), currency).unwrap();
        (s.fee.to_string(), s.net.to_string())
    }

    const USD: Currency = Currency::Fiat(FiatCurrency::USD);

    #[test]
    fn the_specs_example_comes_out_exactly() {
        assert_eq!(split("16.49", "1.0", USD), ("0.16".into(), "16.33".into()));
    }

    #[test]
    fn rounds_half_to_even_at_the_minor_unit() {
        // 0.125 → 0.12 (2 is even), 0.135 → 0.14 (4 is even), 0.1251 → 0.13 (above half).
        assert_eq!(split("12.5", "1", USD), ("0.12".into(), "12.38".into()));
        assert_eq!(split("13.5", "1", USD), ("0.14".into(), "13.36".into()));
        assert_eq!(split("12.51", "1", USD), ("0.13".into(), "12.38".into()));
        let jpy = Currency::Fiat(FiatCurrency::from_code("JPY").unwrap());
        assert_eq!(split("1650", "1", jpy), ("16".into(), "1634".into()));
        assert_eq!(split("1750", "1", jpy), ("18".into(), "1732".into()));
    }

    #[test]
    fn crypto_fees_keep_on_chain_precision() {
        let eth = Currency::Crypto(CryptoAsset::Eth);
        assert_eq!(
            split("0.123456789012345678", "1", eth),
            ("0.001234567890123457".into(), "0.122222221122222221".into())
        );
        assert_eq!(
            split("16.49", "1", Currency::Crypto(CryptoAsset::Usdt)),
            ("0.1649".into(), "16.3251".into())
        );
        // A BTC amount: the fee is exact at the satoshi, half to even below it.
        let btc = Currency::Crypto(CryptoAsset::Btc);
        assert_eq!(
            split("0.00042", "1", btc),
            ("0.0000042".into(), "0.0004158".into())
        );
        assert_eq!(
            split("0.0000015", "1", btc),
            ("0.00000002".into(), "0.00000148".into())
        );
        assert_eq!(
            split("0.0000025", "1", btc),
            ("0.00000002".into(), "0.00000248".into())
        );
    }

    #[test]
    fn gross_with_more_decimals_than_the_currency_is_refused() {
        let err = platform_fee("16.491".parse().unwrap(), "1".parse().unwrap(), USD).unwrap_err();
        assert!(matches!(err, MoneyError::TooManyDecimals { .. }));
    }

    #[test]
    fn edge_percentages() {
        assert_eq!(split("16.49", "0", USD), ("0".into(), "16.49".into()));
        assert_eq!(split("16.49", "100", USD), ("16.49".into(), "0".into()));
        assert_eq!(split("0", "1", USD), ("0".into(), "0".into()));
    }

    fn currency() -> impl Strategy<Value = Currency> {
        prop_oneof![
            Just(USD),
            Just(Currency::Fiat(FiatCurrency::from_code("JPY").unwrap())),
            Just(Currency::Fiat(FiatCurrency::from_code("KWD").unwrap())),
            Just(Currency::Crypto(CryptoAsset::Btc)),
            Just(Currency::Crypto(CryptoAsset::Eth)),
            Just(Currency::Crypto(CryptoAsset::Usdt)),
        ]
    }

    fn case() -> impl Strategy<Value = (Amount, Percentage, Currency)> {
        (currency(), 0i64..=i64::MAX, 0i64..=1_000_000, 0u32..=4).prop_flat_map(
            |(currency, mantissa, pct, pct_scale)| {
                (0..=currency.decimals()).prop_map(move |scale| {
                    let gross = Amount::new(Decimal::new(mantissa, scale)).unwrap();
                    let pct =
                        Percentage::new(Decimal::new(pct, pct_scale).min(Decimal::ONE_HUNDRED))
                            .unwrap();
                    (gross, pct, currency)
                })
            },
        )
    }

    proptest! {
        #[test]
        fn fee_plus_net_is_gross((gross, pct, currency) in case()) {
            let FeeSplit { fee, net } = platform_fee(gross, pct, currency).unwrap();
            prop_assert_eq!(fee.checked_add(net), Some(gross));
            prop_assert!(fee <= gross);
            prop_assert!(fee.decimals() <= currency.decimals());
            prop_assert!(net.decimals() <= currency.decimals());
        }

        #[test]
        // With an i64 mantissa the product has < 2^96 digits' worth and scale ≤ 24, so rust_decimal is exact
        // here and serves as an independent oracle.
        fn agrees_with_decimal_arithmetic_where_that_is_exact((gross, pct, currency) in case()) {
            let expected = (gross.as_decimal() * pct.as_decimal() / Decimal::ONE_HUNDRED)
                .round_dp_with_strategy(currency.decimals(), RoundingStrategy::MidpointNearestEven)
                .normalize();
            prop_assert_eq!(platform_fee(gross, pct, currency).unwrap().fee.as_decimal(), expected);
        }
    }
}
