//! Payment events: an on-chain payment is detected, gathers confirmations, and is confirmed or fails.
//!
//! Guarantees: every payment names its invoice (its partition key), merchant, asset, network and transaction
//! hash; the network carries the asset (no BTC on Tron) and the hash has the network's format; amounts are
//! positive and respect the asset's decimals; a confirming payment has fewer confirmations than required, a
//! confirmed one at least as many; a detected payment's coverage (partial, full, over) agrees with what was
//! due.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{check_decimals, check_details, check_positive, invariant};
use crate::error::{ContractError, ContractErrorKind, de_error};
use crate::id::{InvoiceId, MerchantId};
use crate::money::{Amount, CryptoAsset};
use crate::time::rfc3339;

/// A blockchain network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// Bitcoin main chain.
    Bitcoin,
    /// Ethereum main net (ETH, ERC-20 tokens).
    Ethereum,
    /// Tron (TRC-20 tokens).
    Tron,
    /// Polygon PoS (ERC-20 tokens).
    Polygon,
}

impl Network {
    /// Whether `asset` can be paid on this network: the table of supported asset/network pairs.
    pub const fn carries(self, asset: CryptoAsset) -> bool {
        matches!(
            (self, asset),
            (Network::Bitcoin, CryptoAsset::Btc)
                | (
                    Network::Ethereum,
                    CryptoAsset::Eth | CryptoAsset::Usdt | CryptoAsset::Usdc
                )
                | (Network::Tron, CryptoAsset::Usdt)
                | (Network::Polygon, CryptoAsset::Usdt | CryptoAsset::Usdc)
        )
    }

    /// EVM chains write transaction hashes with `0x`; Bitcoin and Tron without.
    const fn hash_has_0x(self) -> bool {
        matches!(self, Network::Ethereum | Network::Polygon)
    }
}

/// A transaction hash: 32 bytes in lowercase hex, `0x`-prefixed on EVM networks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TransactionHash(String);

impl TransactionHash {
    /// Parses a hash, lower-casing it; the network-specific prefix is checked with the payload.
    pub fn parse(input: &str) -> Result<Self, String> {
        let digits = input.strip_prefix("0x").unwrap_or(input);
        if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{input}` is not a 32-byte hex transaction hash"));
        }
        Ok(TransactionHash(input.to_ascii_lowercase()))
    }

    /// The hash as written on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn check_network(&self, network: Network) -> Result<(), ContractError> {
        if self.0.starts_with("0x") != network.hash_has_0x() {
            let expected = if network.hash_has_0x() {
                "with"
            } else {
                "without"
            };
            return Err(ContractError::at(
                ContractErrorKind::InvalidValue,
                "transaction_hash",
                format!("{network:?} transaction hashes are written {expected} `0x`"),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for TransactionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TransactionHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TransactionHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        TransactionHash::parse(&text).map_err(|e| de_error(ContractErrorKind::InvalidValue, e))
    }
}

impl JsonSchema for TransactionHash {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("TransactionHash")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "32-byte transaction hash in hex; `0x`-prefixed on ethereum and polygon, bare on bitcoin and tron.",
            "pattern": "^(0x)?[0-9a-fA-F]{64}$"
        })
    }
}

/// Longest address accepted on the wire (untrusted input is bounded before it is checked further).
pub const MAX_ADDRESS_CHARS: usize = 100;

const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const BECH32: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// A receiving address on a network: its form is checked against the network's address format (EVM: `0x` and 40
/// hex digits, any case; Tron: `T` and 33 base58 characters; Bitcoin: bech32 `bc1…` or base58 `1…`/`3…`).
/// Checksums are not verified: a scanner only reports addresses it watches, and matching is exact.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Address(
    #[schemars(length(min = 26, max = 100), regex(pattern = "^[0-9A-Za-z]+$"))] pub String,
);

impl Address {
    /// Why `self` is not an address of `network` (None: it is).
    pub fn check(&self, network: Network) -> Option<String> {
        let a = self.0.as_str();
        let ok = a.len() <= MAX_ADDRESS_CHARS
            && match network {
                Network::Ethereum | Network::Polygon => a
                    .strip_prefix("0x")
                    .is_some_and(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit())),
                Network::Tron => {
                    a.len() == 34 && a.starts_with('T') && a.bytes().all(|b| BASE58.contains(&b))
                }
                Network::Bitcoin => {
                    let lower = a.to_ascii_lowercase();
                    match lower.strip_prefix("bc1") {
                        Some(rest) => {
                            (a == lower || a == a.to_ascii_uppercase())
                                && (11..=71).contains(&rest.len())
                                && rest.bytes().all(|b| BECH32.contains(&b))
                        }
                        None => {
                            (a.starts_with('1') || a.starts_with('3'))
                                && (26..=35).contains(&a.len())
                                && a.bytes().all(|b| BASE58.contains(&b))
                        }
                    }
                }
            };
        (!ok).then(|| format!("`{a}` is not a {network:?} address"))
    }

    /// The form addresses are matched in: EVM hex and bech32 lower-cased (they are case-insensitive), base58 as is.
    pub fn canonical(&self, network: Network) -> String {
        match network {
            Network::Ethereum | Network::Polygon => self.0.to_ascii_lowercase(),
            Network::Bitcoin if self.0.to_ascii_lowercase().starts_with("bc1") => {
                self.0.to_ascii_lowercase()
            }
            Network::Bitcoin | Network::Tron => self.0.clone(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where and how an invoice is paid: one address on one network for the invoice's one asset (`InvoiceCreated`
/// version 2, decision 0034), and the confirmations a payment needs there — the merchant's speed policy at the
/// invoice's creation, scaled for the network (a later settings change does not move an open invoice's bar).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deposit {
    /// Network the invoice is paid on; it must carry the invoice's asset.
    pub network: Network,
    /// The invoice's own receiving address on that network.
    pub address: Address,
    /// Confirmations a payment needs to be final (0: accepted when seen); at most 10000.
    #[schemars(range(max = 10000))]
    pub required_confirmations: u32,
}

/// Most confirmations any contract counts (a bound on untrusted input; deeper is final anyway).
pub const MAX_CONFIRMATIONS: u32 = 10_000;

impl Deposit {
    pub(crate) fn validate(&self, asset: CryptoAsset, path: &str) -> Result<(), ContractError> {
        if !self.network.carries(asset) {
            return Err(ContractError::at(
                ContractErrorKind::InvalidValue,
                &format!("{path}.network"),
                format!("{} is not paid on {:?}", asset.code(), self.network),
            ));
        }
        if let Some(why) = self.address.check(self.network) {
            return Err(ContractError::at(
                ContractErrorKind::InvalidValue,
                &format!("{path}.address"),
                why,
            ));
        }
        if self.required_confirmations > MAX_CONFIRMATIONS {
            return Err(ContractError::at(
                ContractErrorKind::InvalidValue,
                &format!("{path}.required_confirmations"),
                format!("at most {MAX_CONFIRMATIONS}"),
            ));
        }
        Ok(())
    }
}

/// Checks the asset/network pair and the hash format shared by every payment event.
pub(crate) fn check_chain(
    asset: CryptoAsset,
    network: Network,
    hash: &TransactionHash,
) -> Result<(), ContractError> {
    if !network.carries(asset) {
        return Err(ContractError::at(
            ContractErrorKind::InvalidValue,
            "network",
            format!("{} is not paid on {network:?}", asset.code()),
        ));
    }
    hash.check_network(network)
}

/// How a detected payment relates to what was still due on the invoice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentCoverage {
    /// Less than was due: the invoice stays open for the rest.
    Partial,
    /// Exactly what was due.
    Full,
    /// More than was due.
    Over,
}

/// A payment towards an invoice appeared on chain (in the mempool or in a block).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentDetected {
    /// The invoice being paid; the partition key.
    pub invoice_id: InvoiceId,
    /// The invoice's merchant.
    pub merchant_id: MerchantId,
    /// Asset paid.
    pub crypto_currency: CryptoAsset,
    /// Network it was paid on.
    pub network: Network,
    /// The paying transaction.
    pub transaction_hash: TransactionHash,
    /// Amount this payment transfers.
    pub amount: Amount,
    /// What was still due on the invoice before this payment.
    pub amount_due: Amount,
    /// `amount` compared with `amount_due`.
    pub coverage: PaymentCoverage,
    /// Detected after the invoice expired.
    pub late: bool,
    /// Confirmations this payment needs (from the merchant's speed policy); 0 accepts it unconfirmed.
    pub required_confirmations: u32,
    /// When it was seen.
    #[serde(
        serialize_with = "rfc3339::serialize",
        deserialize_with = "rfc3339::deserialize"
    )]
    pub detected_at: DateTime<Utc>,
}

impl PaymentDetected {
    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        check_chain(self.crypto_currency, self.network, &self.transaction_hash)?;
        check_positive(self.amount, "amount")?;
        check_decimals(self.amount, self.crypto_currency, "amount")?;
        check_decimals(self.amount_due, self.crypto_currency, "amount_due")?;
        let coverage = match self.amount.cmp(&self.amount_due) {
            std::cmp::Ordering::Less => PaymentCoverage::Partial,
            std::cmp::Ordering::Equal => PaymentCoverage::Full,
            std::cmp::Ordering::Greater => PaymentCoverage::Over,
        };
        if coverage != self.coverage {
            return Err(invariant(
                "coverage",
                format!(
                    "{} paid against {} due is {coverage:?}, not {:?}",
                    self.amount, self.amount_due, self.coverage
                ),
            ));
        }
        Ok(())
    }
}

/// A payment is in a block and gathering confirmations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentConfirming {
    /// The invoice being paid; the partition key.
    pub invoice_id: InvoiceId,
    /// The invoice's merchant.
    pub merchant_id: MerchantId,
    /// Asset paid.
    pub crypto_currency: CryptoAsset,
    /// Network it was paid on.
    pub network: Network,
    /// The paying transaction.
    pub transaction_hash: TransactionHash,
    /// Amount this payment transfers.
    pub amount: Amount,
    /// Confirmations so far: at least 1, fewer than `required_confirmations`.
    pub confirmations: u32,
    /// Confirmations needed.
    pub required_confirmations: u32,
    /// Height of the block that includes the transaction.
    pub block_height: u64,
}

impl PaymentConfirming {
    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        check_chain(self.crypto_currency, self.network, &self.transaction_hash)?;
        check_positive(self.amount, "amount")?;
        check_decimals(self.amount, self.crypto_currency, "amount")?;
        if self.confirmations == 0 || self.confirmations >= self.required_confirmations {
            return Err(invariant(
                "confirmations",
                format!(
                    "a confirming payment has 1 to {} confirmations, not {}",
                    self.required_confirmations.saturating_sub(1),
                    self.confirmations
                ),
            ));
        }
        Ok(())
    }
}

/// A payment has as many confirmations as required and counts as final.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentConfirmed {
    /// The invoice being paid; the partition key.
    pub invoice_id: InvoiceId,
    /// The invoice's merchant.
    pub merchant_id: MerchantId,
    /// Asset paid.
    pub crypto_currency: CryptoAsset,
    /// Network it was paid on.
    pub network: Network,
    /// The paying transaction.
    pub transaction_hash: TransactionHash,
    /// Amount this payment transfers.
    pub amount: Amount,
    /// Confirmations at the time; at least `required_confirmations`.
    pub confirmations: u32,
    /// Confirmations needed.
    pub required_confirmations: u32,
    /// Height of the including block; absent only for a payment accepted with zero confirmations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_height: Option<u64>,
    /// When it became final.
    #[serde(
        serialize_with = "rfc3339::serialize",
        deserialize_with = "rfc3339::deserialize"
    )]
    pub confirmed_at: DateTime<Utc>,
}

impl PaymentConfirmed {
    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        check_chain(self.crypto_currency, self.network, &self.transaction_hash)?;
        check_positive(self.amount, "amount")?;
        check_decimals(self.amount, self.crypto_currency, "amount")?;
        if self.confirmations < self.required_confirmations {
            return Err(invariant(
                "confirmations",
                format!(
                    "{} of {} required confirmations is not confirmed",
                    self.confirmations, self.required_confirmations
                ),
            ));
        }
        if (self.confirmations > 0) != self.block_height.is_some() {
            return Err(invariant(
                "block_height",
                "present exactly when the payment has confirmations",
            ));
        }
        Ok(())
    }
}

/// Why a payment failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentFailureReason {
    /// A conflicting transaction spent the same inputs.
    DoubleSpent,
    /// A chain reorganisation removed the including block and the transaction did not return.
    ChainReorganization,
    /// The transaction left the mempool without being mined.
    Dropped,
    /// The contract call reverted (EVM networks).
    Reverted,
    /// Anything else; `details` says what.
    Other,
}

/// A detected payment will not complete; it no longer counts towards its invoice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentFailed {
    /// The invoice being paid; the partition key.
    pub invoice_id: InvoiceId,
    /// The invoice's merchant.
    pub merchant_id: MerchantId,
    /// Asset paid.
    pub crypto_currency: CryptoAsset,
    /// Network it was paid on.
    pub network: Network,
    /// The failed transaction.
    pub transaction_hash: TransactionHash,
    /// Amount it would have transferred.
    pub amount: Amount,
    /// Why it failed.
    pub reason: PaymentFailureReason,
    /// Free text, required when `reason` is `other`; at most 1000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub details: Option<String>,
    /// When the failure was established.
    #[serde(
        serialize_with = "rfc3339::serialize",
        deserialize_with = "rfc3339::deserialize"
    )]
    pub failed_at: DateTime<Utc>,
}

impl PaymentFailed {
    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        check_chain(self.crypto_currency, self.network, &self.transaction_hash)?;
        check_positive(self.amount, "amount")?;
        check_decimals(self.amount, self.crypto_currency, "amount")?;
        check_details(
            self.details.as_deref(),
            self.reason == PaymentFailureReason::Other,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b";

    fn confirmed() -> PaymentConfirmed {
        PaymentConfirmed {
            invoice_id: InvoiceId::new(),
            merchant_id: MerchantId::new(),
            crypto_currency: CryptoAsset::Btc,
            network: Network::Bitcoin,
            transaction_hash: TransactionHash::parse(HASH).unwrap(),
            amount: "0.00042".parse().unwrap(),
            confirmations: 6,
            required_confirmations: 6,
            block_height: Some(880_000),
            confirmed_at: Utc::now(),
        }
    }

    #[test]
    fn networks_carry_only_their_assets() {
        assert!(Network::Tron.carries(CryptoAsset::Usdt));
        assert!(!Network::Tron.carries(CryptoAsset::Btc));
        let btc_on_ethereum = PaymentConfirmed {
            network: Network::Ethereum,
            transaction_hash: TransactionHash::parse(&format!("0x{HASH}")).unwrap(),
            ..confirmed()
        };
        assert_eq!(btc_on_ethereum.validate().unwrap_err().path(), "$.network");
    }

    #[test]
    fn hash_format_follows_the_network() {
        assert!(TransactionHash::parse("0x1234").is_err());
        let upper = TransactionHash::parse(&HASH.to_uppercase()).unwrap();
        assert_eq!(upper.as_str(), HASH);
        let evm_style_on_bitcoin = PaymentConfirmed {
            transaction_hash: TransactionHash::parse(&format!("0x{HASH}")).unwrap(),
            ..confirmed()
        };
        assert_eq!(
            evm_style_on_bitcoin.validate().unwrap_err().path(),
            "$.transaction_hash"
        );
    }

    #[test]
    fn confirmed_means_enough_confirmations() {
        assert!(confirmed().validate().is_ok());
        let short = PaymentConfirmed {
            confirmations: 5,
            ..confirmed()
        };
        assert_eq!(short.validate().unwrap_err().path(), "$.confirmations");
        let zero_conf = PaymentConfirmed {
            confirmations: 0,
            required_confirmations: 0,
            block_height: None,
            ..confirmed()
        };
        assert!(zero_conf.validate().is_ok());
        let unmined_with_height = PaymentConfirmed {
            block_height: None,
            ..confirmed()
        };
        assert_eq!(
            unmined_with_height.validate().unwrap_err().path(),
            "$.block_height"
        );
    }

    #[test]
    fn confirming_means_some_but_not_enough() {
        let c = confirmed();
        let confirming = PaymentConfirming {
            invoice_id: c.invoice_id,
            merchant_id: c.merchant_id,
            crypto_currency: c.crypto_currency,
            network: c.network,
            transaction_hash: c.transaction_hash,
            amount: c.amount,
            confirmations: 2,
            required_confirmations: 6,
            block_height: 880_000,
        };
        assert!(confirming.validate().is_ok());
        assert!(
            PaymentConfirming {
                confirmations: 6,
                ..confirming.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            PaymentConfirming {
                confirmations: 0,
                ..confirming
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn coverage_must_agree_with_amounts() {
        let detected = PaymentDetected {
            invoice_id: InvoiceId::new(),
            merchant_id: MerchantId::new(),
            crypto_currency: CryptoAsset::Usdt,
            network: Network::Tron,
            transaction_hash: TransactionHash::parse(HASH).unwrap(),
            amount: "10".parse().unwrap(),
            amount_due: "16.49".parse().unwrap(),
            coverage: PaymentCoverage::Partial,
            late: false,
            required_confirmations: 19,
            detected_at: Utc::now(),
        };
        assert!(detected.validate().is_ok());
        let claimed_full = PaymentDetected {
            coverage: PaymentCoverage::Full,
            ..detected
        };
        assert_eq!(claimed_full.validate().unwrap_err().path(), "$.coverage");
    }
}
