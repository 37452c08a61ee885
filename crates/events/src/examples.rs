//! Valid example events of every type, for documentation, the CLI and other crates' tests.
//!
//! Guarantees: [`example`] returns a valid envelope for every event type, deterministically (fixed ids and
//! times, so output is stable and diffable). The examples tell one story — the spec's USD 16.49 invoice paid
//! in USDT on Tron and settled at 1 % — so ids and amounts agree across them. Tests that need distinct events
//! can take an example apart with [`Envelope::into_parts`] and change ids. [`checkout_viewed`] is the same
//! story's record on the analytics topic.

use chrono::{DateTime, Duration, Utc};
use uuid::{Builder, Uuid};

use crate::envelope::{Envelope, EnvelopeParts};
use crate::event_type::EventType;
use crate::id::{
    AggregateId, CorrelationId, EventId, InvoiceId, MerchantId, PaymentId, SettlementId,
};
use crate::metadata::{Actor, ActorKind, Metadata};
use crate::money::{Amount, CryptoAsset, Currency, FiatCurrency, Percentage, platform_fee};
use crate::payload::*;

/// 2025-01-15T10:00:00Z, the spec's invoice creation time, in Unix milliseconds.
const T0_MILLIS: u64 = 1_736_935_200_000;

/// A deterministic UUID v7 `offset_ms` after T0, distinguished by `tag`.
fn v7(offset_ms: u64, tag: u8) -> Uuid {
    Builder::from_unix_timestamp_millis(T0_MILLIS + offset_ms, &[tag; 10]).into_uuid()
}

fn at(offset_seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(T0_MILLIS as i64).expect("fixed time")
        + Duration::seconds(offset_seconds)
}

fn amount(text: &str) -> Amount {
    text.parse().expect("example amounts are valid")
}

/// The merchant of every example.
pub fn merchant_id() -> MerchantId {
    MerchantId::from_uuid(v7(0, 0x11)).expect("non-nil")
}

/// The invoice of every example.
pub fn invoice_id() -> InvoiceId {
    InvoiceId::from_uuid(v7(0, 0x22)).expect("non-nil")
}

/// The payment of every example.
pub fn payment_id() -> PaymentId {
    PaymentId::from_uuid(v7(300_000, 0x33)).expect("non-nil")
}

/// The settlement of every example.
pub fn settlement_id() -> SettlementId {
    SettlementId::from_uuid(v7(1_080_000, 0x44)).expect("non-nil")
}

/// The correlation id of the request that created the example invoice.
pub fn correlation_id() -> CorrelationId {
    CorrelationId::from_uuid(v7(0, 0x55)).expect("non-nil")
}

/// The event id of [`example`]`(event_type)`.
pub fn event_id(event_type: EventType) -> EventId {
    EventId::from_uuid(v7(event_type as u64, 0x66)).expect("non-nil")
}

/// The example invoice's deposit: its Tron address for USDT, 5 confirmations (medium speed on Tron).
pub fn deposit() -> crate::payload::Deposit {
    crate::payload::Deposit {
        network: crate::payload::Network::Tron,
        address: crate::payload::Address(TRON_ADDRESS.to_string()),
        required_confirmations: 5,
    }
}

/// The example invoice's deposit address.
pub const TRON_ADDRESS: &str = "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7";

const TRON_TX: &str = "a3f1c9e2b4d6f8a0c2e4a6b8d0f2a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8";

/// A valid example of `event_type`.
pub fn example(event_type: EventType) -> Envelope {
    let merchant = merchant_id();
    let invoice = invoice_id();
    let usdt = CryptoAsset::Usdt;
    let tx = || TransactionHash::parse(TRON_TX).expect("valid hash");
    let system = |component: &str| {
        Metadata::new(Actor::new(ActorKind::System, component).expect("valid actor"))
    };
    let usd = Currency::Fiat(FiatCurrency::USD);
    let fee_percentage: Percentage = "1.0".parse().expect("valid percentage");
    let split = platform_fee(amount("16.49"), fee_percentage, usd).expect("valid split");

    let (aggregate_id, event_data, metadata, offset): (AggregateId, EventData, Metadata, i64) =
        match event_type {
            EventType::InvoiceCreated => (
                invoice.into(),
                InvoiceCreated {
                    merchant_id: merchant,
                    total_amount: amount("16.49"),
                    currency: FiatCurrency::USD,
                    crypto_amount: amount("16.49"),
                    crypto_currency: usdt,
                    expires_at: at(30 * 60),
                    deposit: Some(deposit()),
                }
                .into(),
                Metadata {
                    ip_address: Some("192.168.1.100".parse().expect("valid ip")),
                    user_agent: Some("MyApp/1.0".into()),
                    request_id: Some("req_xyz789".into()),
                    traceparent: Some(
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                            .parse()
                            .expect("valid"),
                    ),
                    ..Metadata::new(
                        Actor::new(ActorKind::ApiKey, "key_abc123").expect("valid actor"),
                    )
                },
                0,
            ),
            EventType::InvoiceExpired => (
                invoice.into(),
                InvoiceExpired {
                    merchant_id: merchant,
                    crypto_currency: usdt,
                    crypto_amount_due: amount("16.49"),
                    crypto_amount_paid: amount("10"),
                    expired_at: at(30 * 60),
                }
                .into(),
                system("expiry-sweeper"),
                30 * 60,
            ),
            EventType::InvoicePaid => (
                invoice.into(),
                InvoicePaid {
                    merchant_id: merchant,
                    crypto_currency: usdt,
                    crypto_amount_due: amount("16.49"),
                    crypto_amount_paid: amount("16.5"),
                    overpaid_amount: amount("0.01"),
                    late_payment: false,
                    payment_ids: vec![payment_id()],
                    paid_at: at(5 * 60),
                }
                .into(),
                system("payment-tracker"),
                5 * 60,
            ),
            EventType::InvoiceCancelled => (
                invoice.into(),
                InvoiceCancelled {
                    merchant_id: merchant,
                    reason: CancellationReason::MerchantRequest,
                    details: Some("order withdrawn".into()),
                    crypto_currency: usdt,
                    crypto_amount_paid: Amount::ZERO,
                    cancelled_at: at(2 * 60),
                }
                .into(),
                Metadata::new(Actor::new(ActorKind::User, "usr_4821").expect("valid actor")),
                2 * 60,
            ),
            EventType::PaymentDetected => (
                payment_id().into(),
                PaymentDetected {
                    invoice_id: invoice,
                    merchant_id: merchant,
                    crypto_currency: usdt,
                    network: Network::Tron,
                    transaction_hash: tx(),
                    amount: amount("16.5"),
                    amount_due: amount("16.49"),
                    coverage: PaymentCoverage::Over,
                    late: false,
                    required_confirmations: 19,
                    detected_at: at(5 * 60),
                }
                .into(),
                system("chain-watcher"),
                5 * 60,
            ),
            EventType::PaymentConfirming => (
                payment_id().into(),
                PaymentConfirming {
                    invoice_id: invoice,
                    merchant_id: merchant,
                    crypto_currency: usdt,
                    network: Network::Tron,
                    transaction_hash: tx(),
                    amount: amount("16.5"),
                    confirmations: 1,
                    required_confirmations: 19,
                    block_height: 68_912_345,
                }
                .into(),
                system("chain-watcher"),
                6 * 60,
            ),
            EventType::PaymentConfirmed => (
                payment_id().into(),
                PaymentConfirmed {
                    invoice_id: invoice,
                    merchant_id: merchant,
                    crypto_currency: usdt,
                    network: Network::Tron,
                    transaction_hash: tx(),
                    amount: amount("16.5"),
                    confirmations: 19,
                    required_confirmations: 19,
                    block_height: Some(68_912_345),
                    confirmed_at: at(17 * 60),
                }
                .into(),
                system("chain-watcher"),
                17 * 60,
            ),
            EventType::PaymentFailed => (
                payment_id().into(),
                PaymentFailed {
                    invoice_id: invoice,
                    merchant_id: merchant,
                    crypto_currency: usdt,
                    network: Network::Tron,
                    transaction_hash: tx(),
                    amount: amount("16.5"),
                    reason: PaymentFailureReason::ChainReorganization,
                    details: None,
                    failed_at: at(7 * 60),
                }
                .into(),
                system("chain-watcher"),
                7 * 60,
            ),
            EventType::SettlementCreated => (
                settlement_id().into(),
                SettlementCreated {
                    invoice_id: invoice,
                    merchant_id: merchant,
                    currency: usd,
                    gross_amount: amount("16.49"),
                    platform_fee_amount: split.fee,
                    net_amount: split.net,
                    fee_percentage,
                }
                .into(),
                Metadata {
                    source: Some("payment-confirmation".into()),
                    ..system("settlement-processor")
                },
                18 * 60,
            ),
            EventType::SettlementCompleted => (
                settlement_id().into(),
                SettlementCompleted {
                    invoice_id: invoice,
                    merchant_id: merchant,
                    currency: usd,
                    gross_amount: amount("16.49"),
                    platform_fee_amount: split.fee,
                    net_amount: split.net,
                    fee_percentage,
                    settled_at: at(18 * 60 + 30),
                }
                .into(),
                Metadata {
                    source: Some("payment-confirmation".into()),
                    ..system("settlement-processor")
                },
                18 * 60 + 30,
            ),
            EventType::SettlementFailed => (
                settlement_id().into(),
                SettlementFailed {
                    invoice_id: invoice,
                    merchant_id: merchant,
                    currency: usd,
                    net_amount: split.net,
                    reason: SettlementFailureReason::PayoutRejected,
                    details: Some("bank returned R03".into()),
                    will_retry: true,
                    failed_at: at(18 * 60 + 30),
                }
                .into(),
                system("settlement-processor"),
                18 * 60 + 30,
            ),
            EventType::MerchantCreated => (
                merchant.into(),
                MerchantCreated {
                    business_name: "Coffee Corner".into(),
                    default_currency: FiatCurrency::USD,
                    settlement_currency: usd,
                    fee_percentage,
                    accepted_crypto_currencies: vec![
                        CryptoAsset::Btc,
                        CryptoAsset::Usdt,
                        CryptoAsset::Usdc,
                    ],
                    speed_policy: SpeedPolicy::MediumSpeed,
                    contact: MerchantContact {
                        email: Some("owner@coffee-corner.example".into()),
                        phone: Some("+15551234567".into()),
                        locale: Some("en".into()),
                    },
                }
                .into(),
                Metadata::new(Actor::new(ActorKind::Admin, "adm_7").expect("valid actor")),
                -86_400,
            ),
            EventType::MerchantSuspended => (
                merchant.into(),
                MerchantSuspended {
                    reason: SuspensionReason::ComplianceReview,
                    details: Some("KYB documents expired".into()),
                    suspended_at: at(86_400),
                }
                .into(),
                Metadata::new(Actor::new(ActorKind::Admin, "adm_7").expect("valid actor")),
                86_400,
            ),
            EventType::MerchantReinstated => (
                merchant.into(),
                MerchantReinstated {
                    reinstated_at: at(2 * 86_400),
                    details: Some("KYB documents renewed".into()),
                }
                .into(),
                Metadata::new(Actor::new(ActorKind::Admin, "adm_7").expect("valid actor")),
                2 * 86_400,
            ),
            EventType::WebhookEndpointDisabled => (
                merchant.into(),
                WebhookEndpointDisabled {
                    endpoint_id: "ep_01946967-d500-7444-a444-444444444444".into(),
                    reason: EndpointDisabledReason::Gone,
                    disabled_at: at(3 * 86_400),
                    details: Some("410 Gone".into()),
                }
                .into(),
                Metadata::new(Actor::new(ActorKind::System, "webhooks").expect("valid actor")),
                3 * 86_400,
            ),
            EventType::SettingsUpdated => (
                merchant.into(),
                SettingsUpdated {
                    changes: SettingsChanges {
                        speed_policy: Some(Change {
                            old: SpeedPolicy::MediumSpeed,
                            new: SpeedPolicy::LowSpeed,
                        }),
                        invoice_expiry_minutes: Some(Change { old: 15, new: 30 }),
                        ..SettingsChanges::default()
                    },
                }
                .into(),
                Metadata::new(Actor::new(ActorKind::User, "usr_4821").expect("valid actor")),
                -3_600,
            ),
        };

    let (correlation_id, causation_id) = match event_type {
        EventType::InvoiceCreated => (Some(correlation_id()), None),
        EventType::SettlementCreated | EventType::SettlementCompleted => (
            Some(correlation_id()),
            Some(event_id(EventType::PaymentConfirmed)),
        ),
        _ => (None, None),
    };
    Envelope::from_parts(EnvelopeParts {
        event_id: event_id(event_type),
        aggregate_id,
        event_data,
        metadata,
        timestamp: at(offset),
        correlation_id,
        causation_id,
    })
    .expect("examples are valid")
}

/// A valid `CheckoutViewed` (the analytics topic's record): the customer opens the example invoice's checkout
/// 72 seconds after it was created.
pub fn checkout_viewed() -> crate::analytics::CheckoutViewed {
    crate::analytics::CheckoutViewed {
        event_id: EventId::from_uuid(v7(72_000, 0xa1)).expect("not nil"),
        merchant_id: merchant_id(),
        invoice_id: invoice_id(),
        occurred_at: at(72),
    }
}

/// A valid `PaymentMethodChosen` (the analytics topic's record): 20 seconds after the view, the customer picks
/// USDT on Tron, the example invoice's deposit.
pub fn payment_method_chosen() -> crate::analytics::PaymentMethodChosen {
    crate::analytics::PaymentMethodChosen {
        event_id: EventId::from_uuid(v7(92_000, 0xa2)).expect("not nil"),
        merchant_id: merchant_id(),
        invoice_id: invoice_id(),
        crypto_currency: crate::money::CryptoAsset::Usdt,
        network: crate::payload::Network::Tron,
        occurred_at: at(92),
    }
}

/// A valid `CheckoutAbandoned` (the analytics topic's record): another visit of the example invoice's checkout
/// left before a method was chosen.
pub fn checkout_abandoned() -> crate::analytics::CheckoutAbandoned {
    use crate::analytics::{AbandonReason, AbandonStage, CheckoutAbandoned};
    CheckoutAbandoned {
        event_id: EventId::from_uuid(v7(112_000, 0xa3)).expect("not nil"),
        merchant_id: merchant_id(),
        invoice_id: invoice_id(),
        stage: AbandonStage::ChoosingMethod,
        reason: AbandonReason::LeftPage,
        occurred_at: at(112),
    }
}

/// Every record type of the analytics topic's example, in the order of `analytics::RECORD_TYPES`.
pub fn analytics_events() -> Vec<crate::analytics::AnalyticsEvent> {
    vec![
        checkout_viewed().into(),
        payment_method_chosen().into(),
        checkout_abandoned().into(),
    ]
}

/// A valid `NotificationRequested` (the notification topic's record): the example merchant is told by e-mail that
/// the example settlement completed.
pub fn notification_requested() -> crate::notification::NotificationRequested {
    use crate::notification::{Channel, NotificationRequested, Recipient};
    let cause = EventId::from_uuid(v7(3_600_000, 0xb1)).expect("not nil");
    NotificationRequested {
        notification_id: crate::id::NotificationId::derived(cause, "settlement_completed.email"),
        requested_at: at(3600),
        recipient: Recipient::merchant(merchant_id()),
        channel: Channel::Email,
        template: "settlement_completed".into(),
        locale: "en".into(),
        parameters: [
            ("settlement_id", settlement_id().to_string()),
            ("invoice_id", invoice_id().to_string()),
            ("net_amount", "98.01".to_string()),
            ("fee_amount", "0.99".to_string()),
            ("currency", "USD".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        destination: Some("merchant@example.com".into()),
        causation_id: Some(cause),
    }
}

/// One valid example of every event type, in catalogue order.
pub fn all() -> Vec<Envelope> {
    EventType::ALL.iter().map(|t| example(*t)).collect()
}

/// Valid records of the integration topic, one of each type, about one output paying the example invoice's
/// deposit address on Tron: seen in the mempool, confirmed in a block, then (say) reorganised out.
pub fn integration_events() -> Vec<crate::integration::IntegrationEvent> {
    use crate::integration::{
        ChainOutput, ConfirmationsChanged, DropReason, IntegrationData, IntegrationEvent,
        TransactionDropped, TransactionObserved,
    };
    let output = ChainOutput {
        network: crate::payload::Network::Tron,
        crypto_currency: CryptoAsset::Usdt,
        transaction_hash: TransactionHash::parse(TRON_TX).expect("valid hash"),
        output_index: 0,
        address: crate::payload::Address(TRON_ADDRESS.to_string()),
        amount: amount("16.49"),
    };
    let record = |n: u64, seconds: i64, data| IntegrationEvent {
        event_id: EventId::from_uuid(v7(100 + n, 0x77)).expect("non-nil"),
        source: "scanner:tron".to_string(),
        observed_at: at(seconds),
        data,
    };
    vec![
        record(
            0,
            5 * 60,
            IntegrationData::TransactionObserved(TransactionObserved {
                output: output.clone(),
                block_height: None,
                confirmations: 0,
            }),
        ),
        record(
            1,
            5 * 60 + 9,
            IntegrationData::ConfirmationsChanged(ConfirmationsChanged {
                output: output.clone(),
                block_height: Some(68_000_123),
                confirmations: 3,
            }),
        ),
        record(
            2,
            5 * 60 + 12,
            IntegrationData::TransactionDropped(TransactionDropped {
                output,
                reason: DropReason::Reorganized,
                details: None,
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_valid_example_with_its_own_id() {
        let examples = all();
        assert_eq!(examples.len(), EventType::ALL.len());
        for (envelope, event_type) in examples.iter().zip(EventType::ALL) {
            assert_eq!(envelope.event_type(), *event_type);
            assert_eq!(envelope.event_id().as_uuid().get_version_num(), 7);
        }
        let mut ids: Vec<_> = examples.iter().map(|e| e.event_id()).collect();
        ids.dedup();
        assert_eq!(ids.len(), examples.len());
    }

    #[test]
    fn examples_are_deterministic() {
        assert_eq!(
            example(EventType::InvoiceCreated),
            example(EventType::InvoiceCreated)
        );
    }
}
