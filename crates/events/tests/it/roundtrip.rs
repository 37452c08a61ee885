//! Round-trip properties, one test per event type.
//!
//! For any valid envelope `e`: `decode(encode(e)) == e`; the encoding is a fixed point (re-encoding what was
//! decoded gives the same bytes); the same event written loosely — amounts as bare JSON numbers, ids as bare
//! upper-case UUIDs, fields in another order — decodes to `e`; and the partition key follows the spec's table.

use events::{AggregateType, Envelope, EventType, decode, encode};
use proptest::prelude::*;
use serde_json::Value;

use crate::strategies::envelope;

/// Fields holding amounts or percentages (written as strings canonically).
const DECIMAL_FIELDS: &[&str] = &[
    "total_amount",
    "crypto_amount",
    "crypto_amount_due",
    "crypto_amount_paid",
    "overpaid_amount",
    "amount",
    "amount_due",
    "gross_amount",
    "platform_fee_amount",
    "net_amount",
    "fee_percentage",
    "payment_tolerance_percentage",
];
const ID_PREFIXES: &[&str] = &["evt_", "inv_", "pay_", "set_", "mer_", "corr_"];

/// Rewrites canonical JSON the way a lax producer might: numbers for decimals, bare upper-case UUIDs, keys
/// in reverse order.
fn loosen(value: &Value, decimal_context: bool) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (key, v) in map.iter().rev() {
                let decimal = DECIMAL_FIELDS.contains(&key.as_str())
                    || (decimal_context && (key == "old" || key == "new"));
                out.insert(key.clone(), loosen(v, decimal));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| loosen(v, false)).collect()),
        Value::String(s) if decimal_context => {
            serde_json::from_str(s).expect("canonical decimals are JSON numbers")
        }
        Value::String(s) => match ID_PREFIXES.iter().find_map(|p| s.strip_prefix(p)) {
            Some(uuid) if uuid.len() == 36 => Value::String(uuid.to_uppercase()),
            _ => value.clone(),
        },
        other => other.clone(),
    }
}

fn check(e: &Envelope) -> Result<(), TestCaseError> {
    let bytes = encode(e).map_err(|err| TestCaseError::fail(err.to_string()))?;
    let decoded = decode(&bytes).map_err(|err| TestCaseError::fail(err.to_string()))?;
    prop_assert_eq!(&decoded, e);
    prop_assert_eq!(encode(&decoded).unwrap(), bytes.clone());

    let canonical: Value = serde_json::from_slice(&bytes).unwrap();
    let payload_is_settings = e.event_type() == EventType::SettingsUpdated;
    let mut loose = loosen(&canonical, false);
    if payload_is_settings {
        // Only the tolerance change holds decimals among the settings.
        if let Some(change) = canonical.pointer("/event_data/changes/payment_tolerance_percentage")
        {
            *loose
                .pointer_mut("/event_data/changes/payment_tolerance_percentage")
                .unwrap() = loosen(change, true);
        }
    }
    let from_loose = decode(loose.to_string().as_bytes())
        .map_err(|err| TestCaseError::fail(format!("{err}\n{loose}")))?;
    prop_assert_eq!(&from_loose, e);

    let key = match e.aggregate_type() {
        AggregateType::Invoice | AggregateType::Payment => e.invoice_id().unwrap().to_string(),
        AggregateType::Settlement | AggregateType::Merchant => e.merchant_id().to_string(),
    };
    prop_assert_eq!(e.partition_key(), key);
    Ok(())
}

macro_rules! round_trips {
    ($($test:ident: $event_type:ident,)*) => {
        proptest! {
            $(
                #[test]
                fn $test(e in envelope(EventType::$event_type)) {
                    check(&e)?;
                }
            )*
        }

        #[test]
        fn every_event_type_has_a_round_trip_test() {
            let tested = [$(EventType::$event_type),*];
            assert_eq!(tested.as_slice(), EventType::ALL);
        }
    };
}

round_trips! {
    invoice_created: InvoiceCreated,
    invoice_expired: InvoiceExpired,
    invoice_paid: InvoicePaid,
    invoice_cancelled: InvoiceCancelled,
    payment_detected: PaymentDetected,
    payment_confirming: PaymentConfirming,
    payment_confirmed: PaymentConfirmed,
    payment_failed: PaymentFailed,
    settlement_created: SettlementCreated,
    settlement_completed: SettlementCompleted,
    settlement_failed: SettlementFailed,
    merchant_created: MerchantCreated,
    merchant_suspended: MerchantSuspended,
    settings_updated: SettingsUpdated,
    merchant_reinstated: MerchantReinstated,
    webhook_endpoint_disabled: WebhookEndpointDisabled,
}
