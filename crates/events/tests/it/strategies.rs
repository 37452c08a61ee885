//! Proptest generators of valid envelopes, one per event type.
//!
//! Every generator builds payloads that satisfy their invariants by construction (fee from the fee function,
//! over-payment from paid − due, confirmations on the right side of the requirement), with amounts at every
//! precision their currency allows.

use chrono::{DateTime, Duration, Utc};
use events::money::{
    Amount, CryptoAsset, Currency, Decimal, FiatCurrency, Percentage, platform_fee,
};
use events::payload::*;
use events::{
    Actor, ActorKind, AggregateId, CorrelationId, Envelope, EnvelopeParts, EventData, EventId,
    EventType, InvoiceId, MerchantId, Metadata, PaymentId, SettlementId,
};
use proptest::prelude::*;
use proptest::sample::select;
use uuid::Uuid;

fn uuid() -> impl Strategy<Value = Uuid> {
    (1u128..).prop_map(Uuid::from_u128)
}

macro_rules! id_strategy {
    ($name:ident, $ty:ty) => {
        pub fn $name() -> impl Strategy<Value = $ty> {
            uuid().prop_map(|u| <$ty>::from_uuid(u).unwrap())
        }
    };
}
id_strategy!(event_id, EventId);
id_strategy!(invoice_id, InvoiceId);
id_strategy!(payment_id, PaymentId);
id_strategy!(settlement_id, SettlementId);
id_strategy!(merchant_id, MerchantId);
id_strategy!(correlation_id, CorrelationId);

fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    // 2020 to 2035, microsecond precision.
    (1_577_836_800_000_000i64..2_051_222_400_000_000)
        .prop_map(|micros| DateTime::from_timestamp_micros(micros).unwrap())
}

fn fiat() -> impl Strategy<Value = FiatCurrency> {
    select(vec!["USD", "EUR", "GBP", "JPY", "KWD", "CHF", "BRL"])
        .prop_map(|c| FiatCurrency::from_code(c).unwrap())
}

fn asset() -> impl Strategy<Value = CryptoAsset> {
    select(CryptoAsset::ALL.to_vec())
}

fn currency() -> impl Strategy<Value = Currency> {
    prop_oneof![
        fiat().prop_map(Currency::Fiat),
        asset().prop_map(Currency::Crypto)
    ]
}

/// An amount of `units` at any scale the currency allows.
fn amount_of(units: u64, decimals: u32) -> impl Strategy<Value = Amount> {
    (0..=decimals).prop_map(move |scale| {
        Amount::new(Decimal::from_i128_with_scale(i128::from(units), scale)).unwrap()
    })
}

fn amount(decimals: u32) -> impl Strategy<Value = Amount> {
    (0u64..1_000_000_000_000_000).prop_flat_map(move |units| amount_of(units, decimals))
}

fn positive_amount(decimals: u32) -> impl Strategy<Value = Amount> {
    (1u64..1_000_000_000_000_000).prop_flat_map(move |units| amount_of(units, decimals))
}

/// (smaller, larger) with both at the same scale.
fn ordered_amounts(decimals: u32, strictly: bool) -> impl Strategy<Value = (Amount, Amount)> {
    (1u64..1_000_000_000_000, 0u64..1_000_000, 0..=decimals).prop_map(move |(small, gap, scale)| {
        let gap = if strictly { gap + 1 } else { gap };
        let at = |units: u64| {
            Amount::new(Decimal::from_i128_with_scale(i128::from(units), scale)).unwrap()
        };
        (at(small), at(small + gap))
    })
}

fn percentage() -> impl Strategy<Value = Percentage> {
    (0i64..=1_000_000, 0u32..=4)
        .prop_map(|(m, s)| Percentage::new(Decimal::new(m, s).min(Decimal::ONE_HUNDRED)).unwrap())
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9 .,;:/()é€-]{{1,{max}}}")).unwrap()
}

fn chain() -> impl Strategy<Value = (CryptoAsset, Network, TransactionHash)> {
    let pairs: Vec<_> = [
        Network::Bitcoin,
        Network::Ethereum,
        Network::Tron,
        Network::Polygon,
    ]
    .into_iter()
    .flat_map(|n| {
        CryptoAsset::ALL
            .into_iter()
            .filter(move |a| n.carries(*a))
            .map(move |a| (a, n))
    })
    .collect();
    (select(pairs), any::<[u8; 32]>()).prop_map(|((asset, network), bytes)| {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let written = if matches!(network, Network::Ethereum | Network::Polygon) {
            format!("0x{hex}")
        } else {
            hex
        };
        (asset, network, TransactionHash::parse(&written).unwrap())
    })
}

/// A reason and details consistent with it (details required for `other`).
fn reason_details<R: Clone + std::fmt::Debug + PartialEq + 'static>(
    reasons: Vec<R>,
    other: R,
) -> impl Strategy<Value = (R, Option<String>)> {
    (select(reasons), proptest::option::of(text(200))).prop_map(move |(reason, details)| {
        let details = if reason == other {
            details.or_else(|| Some("explained".into()))
        } else {
            details
        };
        (reason, details)
    })
}

fn metadata() -> impl Strategy<Value = Metadata> {
    let actor = (select(ActorKind::ALL.to_vec()), "[a-z0-9_-]{1,24}")
        .prop_map(|(k, id)| Actor::new(k, &id).unwrap());
    let traceparent = ("[0-9a-f]{31}[1-9a-f]", "[0-9a-f]{15}[1-9a-f]", "0[01]")
        .prop_map(|(t, s, f)| format!("00-{t}-{s}-{f}").parse().unwrap());
    (
        actor,
        proptest::option::of(prop_oneof![
            any::<std::net::Ipv4Addr>().prop_map(Into::into),
            any::<std::net::Ipv6Addr>().prop_map(Into::into)
        ]),
        proptest::option::of("[ -~]{1,80}"),
        proptest::option::of("[A-Za-z0-9_-]{1,40}"),
        proptest::option::of("[a-z-]{1,30}"),
        proptest::option::of(traceparent),
    )
        .prop_map(
            |(actor, ip_address, user_agent, request_id, source, traceparent)| Metadata {
                actor,
                ip_address,
                user_agent,
                request_id,
                source,
                traceparent,
            },
        )
}

type Payload = (AggregateId, EventData);

fn invoice_created() -> impl Strategy<Value = Payload> {
    (invoice_id(), merchant_id(), fiat(), asset(), timestamp()).prop_flat_map(
        |(id, merchant, fiat, asset, expires_at)| {
            (
                positive_amount(fiat.decimals()),
                positive_amount(asset.decimals()),
            )
                .prop_map(move |(total, crypto)| {
                    let payload = InvoiceCreated {
                        merchant_id: merchant,
                        total_amount: total,
                        currency: fiat,
                        crypto_amount: crypto,
                        crypto_currency: asset,
                        expires_at,
                        deposit: None,
                    };
                    (id.into(), payload.into())
                })
        },
    )
}

fn invoice_expired() -> impl Strategy<Value = Payload> {
    (invoice_id(), merchant_id(), asset(), timestamp()).prop_flat_map(
        |(id, merchant, asset, at)| {
            (ordered_amounts(asset.decimals(), true), any::<bool>()).prop_map(
                move |((paid, due), nothing_paid)| {
                    let payload = InvoiceExpired {
                        merchant_id: merchant,
                        crypto_currency: asset,
                        crypto_amount_due: due,
                        crypto_amount_paid: if nothing_paid { Amount::ZERO } else { paid },
                        expired_at: at,
                    };
                    (id.into(), payload.into())
                },
            )
        },
    )
}

fn invoice_paid() -> impl Strategy<Value = Payload> {
    (
        invoice_id(),
        merchant_id(),
        asset(),
        timestamp(),
        any::<bool>(),
        proptest::collection::hash_set(payment_id(), 1..5),
    )
        .prop_flat_map(|(id, merchant, asset, at, late, payments)| {
            ordered_amounts(asset.decimals(), false).prop_map(move |(due, paid)| {
                let payload = InvoicePaid {
                    merchant_id: merchant,
                    crypto_currency: asset,
                    crypto_amount_due: due,
                    crypto_amount_paid: paid,
                    overpaid_amount: paid.checked_sub(due).unwrap(),
                    late_payment: late,
                    payment_ids: payments.iter().copied().collect(),
                    paid_at: at,
                };
                (id.into(), payload.into())
            })
        })
}

fn invoice_cancelled() -> impl Strategy<Value = Payload> {
    use CancellationReason::*;
    let reasons = vec![
        MerchantRequest,
        CustomerRequest,
        SuspectedFraud,
        Duplicate,
        Other,
    ];
    (
        invoice_id(),
        merchant_id(),
        asset(),
        timestamp(),
        reason_details(reasons, Other),
    )
        .prop_flat_map(|(id, merchant, asset, at, (reason, details))| {
            amount(asset.decimals()).prop_map(move |paid| {
                let payload = InvoiceCancelled {
                    merchant_id: merchant,
                    reason,
                    details: details.clone(),
                    crypto_currency: asset,
                    crypto_amount_paid: paid,
                    cancelled_at: at,
                };
                (id.into(), payload.into())
            })
        })
}

fn payment_detected() -> impl Strategy<Value = Payload> {
    (
        payment_id(),
        invoice_id(),
        merchant_id(),
        chain(),
        timestamp(),
        any::<bool>(),
        0u32..100,
    )
        .prop_flat_map(
            |(id, invoice, merchant, (asset, network, hash), at, late, required)| {
                (positive_amount(asset.decimals()), amount(asset.decimals())).prop_map(
                    move |(amount, due)| {
                        let coverage = match amount.cmp(&due) {
                            std::cmp::Ordering::Less => PaymentCoverage::Partial,
                            std::cmp::Ordering::Equal => PaymentCoverage::Full,
                            std::cmp::Ordering::Greater => PaymentCoverage::Over,
                        };
                        let payload = PaymentDetected {
                            invoice_id: invoice,
                            merchant_id: merchant,
                            crypto_currency: asset,
                            network,
                            transaction_hash: hash.clone(),
                            amount,
                            amount_due: due,
                            coverage,
                            late,
                            required_confirmations: required,
                            detected_at: at,
                        };
                        (id.into(), payload.into())
                    },
                )
            },
        )
}

fn payment_confirming() -> impl Strategy<Value = Payload> {
    (
        payment_id(),
        invoice_id(),
        merchant_id(),
        chain(),
        2u32..100,
        any::<u64>(),
    )
        .prop_flat_map(
            |(id, invoice, merchant, (asset, network, hash), required, height)| {
                (positive_amount(asset.decimals()), 1..required).prop_map(
                    move |(amount, confirmations)| {
                        let payload = PaymentConfirming {
                            invoice_id: invoice,
                            merchant_id: merchant,
                            crypto_currency: asset,
                            network,
                            transaction_hash: hash.clone(),
                            amount,
                            confirmations,
                            required_confirmations: required,
                            block_height: height,
                        };
                        (id.into(), payload.into())
                    },
                )
            },
        )
}

fn payment_confirmed() -> impl Strategy<Value = Payload> {
    (
        payment_id(),
        invoice_id(),
        merchant_id(),
        chain(),
        0u32..100,
        0u32..10,
        any::<u64>(),
        timestamp(),
    )
        .prop_flat_map(
            |(id, invoice, merchant, (asset, network, hash), required, extra, height, at)| {
                positive_amount(asset.decimals()).prop_map(move |amount| {
                    let confirmations = required + extra;
                    let payload = PaymentConfirmed {
                        invoice_id: invoice,
                        merchant_id: merchant,
                        crypto_currency: asset,
                        network,
                        transaction_hash: hash.clone(),
                        amount,
                        confirmations,
                        required_confirmations: required,
                        block_height: (confirmations > 0).then_some(height),
                        confirmed_at: at,
                    };
                    (id.into(), payload.into())
                })
            },
        )
}

fn payment_failed() -> impl Strategy<Value = Payload> {
    use PaymentFailureReason::*;
    let reasons = vec![DoubleSpent, ChainReorganization, Dropped, Reverted, Other];
    (
        payment_id(),
        invoice_id(),
        merchant_id(),
        chain(),
        timestamp(),
        reason_details(reasons, Other),
    )
        .prop_flat_map(
            |(id, invoice, merchant, (asset, network, hash), at, (reason, details))| {
                positive_amount(asset.decimals()).prop_map(move |amount| {
                    let payload = PaymentFailed {
                        invoice_id: invoice,
                        merchant_id: merchant,
                        crypto_currency: asset,
                        network,
                        transaction_hash: hash.clone(),
                        amount,
                        reason,
                        details: details.clone(),
                        failed_at: at,
                    };
                    (id.into(), payload.into())
                })
            },
        )
}

/// (currency, gross, percentage, fee, net) consistent with the fee function.
fn split() -> impl Strategy<Value = (Currency, Amount, Percentage, Amount, Amount)> {
    (currency(), percentage()).prop_flat_map(|(currency, pct)| {
        positive_amount(currency.decimals()).prop_map(move |gross| {
            let s = platform_fee(gross, pct, currency).unwrap();
            (currency, gross, pct, s.fee, s.net)
        })
    })
}

fn settlement_created() -> impl Strategy<Value = Payload> {
    (settlement_id(), invoice_id(), merchant_id(), split()).prop_map(
        |(id, invoice, merchant, (currency, gross, pct, fee, net))| {
            let payload = SettlementCreated {
                invoice_id: invoice,
                merchant_id: merchant,
                currency,
                gross_amount: gross,
                platform_fee_amount: fee,
                net_amount: net,
                fee_percentage: pct,
            };
            (id.into(), payload.into())
        },
    )
}

fn settlement_completed() -> impl Strategy<Value = Payload> {
    (
        settlement_id(),
        invoice_id(),
        merchant_id(),
        split(),
        timestamp(),
    )
        .prop_map(
            |(id, invoice, merchant, (currency, gross, pct, fee, net), at)| {
                let payload = SettlementCompleted {
                    invoice_id: invoice,
                    merchant_id: merchant,
                    currency,
                    gross_amount: gross,
                    platform_fee_amount: fee,
                    net_amount: net,
                    fee_percentage: pct,
                    settled_at: at,
                };
                (id.into(), payload.into())
            },
        )
}

fn settlement_failed() -> impl Strategy<Value = Payload> {
    use SettlementFailureReason::*;
    let reasons = vec![
        InvalidPayoutDestination,
        PayoutRejected,
        ComplianceHold,
        MerchantSuspended,
        Other,
    ];
    (
        settlement_id(),
        invoice_id(),
        merchant_id(),
        currency(),
        timestamp(),
        any::<bool>(),
        reason_details(reasons, Other),
    )
        .prop_flat_map(
            |(id, invoice, merchant, currency, at, will_retry, (reason, details))| {
                amount(currency.decimals()).prop_map(move |net| {
                    let payload = SettlementFailed {
                        invoice_id: invoice,
                        merchant_id: merchant,
                        currency,
                        net_amount: net,
                        reason,
                        details: details.clone(),
                        // A suspended merchant's settlement is held for retry (the contract's invariant).
                        will_retry: will_retry || reason == MerchantSuspended,
                        failed_at: at,
                    };
                    (id.into(), payload.into())
                })
            },
        )
}

fn assets() -> impl Strategy<Value = Vec<CryptoAsset>> {
    proptest::sample::subsequence(CryptoAsset::ALL.to_vec(), 1..=CryptoAsset::ALL.len())
        .prop_shuffle()
}

fn speed_policy() -> impl Strategy<Value = SpeedPolicy> {
    use SpeedPolicy::*;
    select(vec![HighSpeed, MediumSpeed, LowMediumSpeed, LowSpeed])
}

fn merchant_created() -> impl Strategy<Value = Payload> {
    (
        merchant_id(),
        text(200),
        fiat(),
        currency(),
        percentage(),
        assets(),
        speed_policy(),
    )
        .prop_map(
            |(
                id,
                name,
                default_currency,
                settlement_currency,
                fee_percentage,
                accepted,
                speed_policy,
            )| {
                let email = format!("ops{}@example.com", name.chars().count());
                let payload = MerchantCreated {
                    business_name: name,
                    default_currency,
                    settlement_currency,
                    fee_percentage,
                    accepted_crypto_currencies: accepted,
                    speed_policy,
                    contact: MerchantContact {
                        email: Some(email),
                        phone: None,
                        locale: Some("en".into()),
                    },
                };
                (id.into(), payload.into())
            },
        )
}

fn merchant_suspended() -> impl Strategy<Value = Payload> {
    use SuspensionReason::*;
    let reasons = vec![
        SuspectedFraud,
        ComplianceReview,
        TermsViolation,
        MerchantRequest,
        Other,
    ];
    (merchant_id(), timestamp(), reason_details(reasons, Other)).prop_map(
        |(id, at, (reason, details))| {
            (
                id.into(),
                MerchantSuspended {
                    reason,
                    details,
                    suspended_at: at,
                }
                .into(),
            )
        },
    )
}

fn merchant_reinstated() -> impl Strategy<Value = Payload> {
    (merchant_id(), timestamp(), proptest::option::of(text(200))).prop_map(|(id, at, details)| {
        (
            id.into(),
            MerchantReinstated {
                reinstated_at: at,
                details,
            }
            .into(),
        )
    })
}

fn webhook_endpoint_disabled() -> impl Strategy<Value = Payload> {
    (
        merchant_id(),
        any::<u128>().prop_filter("not nil", |u| *u != 0),
        prop_oneof![
            Just(EndpointDisabledReason::Gone),
            Just(EndpointDisabledReason::Failing),
            Just(EndpointDisabledReason::Operator),
        ],
        timestamp(),
        proptest::option::of(text(200)),
    )
        .prop_map(|(id, endpoint, reason, at, details)| {
            (
                id.into(),
                WebhookEndpointDisabled {
                    endpoint_id: format!("ep_{}", uuid::Uuid::from_u128(endpoint)),
                    reason,
                    disabled_at: at,
                    details,
                }
                .into(),
            )
        })
}

/// A change whose old and new values differ.
fn change<T: Clone + PartialEq + std::fmt::Debug + 'static, S: Strategy<Value = T> + 'static>(
    values: impl Fn() -> S,
) -> impl Strategy<Value = Option<Change<T>>> {
    proptest::option::of(
        (values(), values())
            .prop_filter("a change changes something", |(old, new)| old != new)
            .prop_map(|(old, new)| Change { old, new }),
    )
}

fn settings_updated() -> impl Strategy<Value = Payload> {
    (
        merchant_id(),
        change(fiat),
        change(currency),
        change(|| 1u32..=10_080),
        change(speed_policy),
        change(percentage),
        change(assets),
    )
        .prop_map(
            |(id, default_currency, settlement_currency, expiry, speed, tolerance, accepted)| {
                let changes = SettingsChanges {
                    default_currency,
                    settlement_currency,
                    invoice_expiry_minutes: expiry,
                    speed_policy: speed,
                    payment_tolerance_percentage: tolerance,
                    accepted_crypto_currencies: accepted,
                    contact: None,
                };
                (id, changes)
            },
        )
        .prop_filter("an update changes at least one setting", |(_, c)| {
            *c != SettingsChanges::default()
        })
        .prop_map(|(id, changes)| (id.into(), SettingsUpdated { changes }.into()))
}

/// Valid payloads of `event_type` with their aggregate ids.
pub fn payload(event_type: EventType) -> BoxedStrategy<Payload> {
    match event_type {
        EventType::InvoiceCreated => invoice_created().boxed(),
        EventType::InvoiceExpired => invoice_expired().boxed(),
        EventType::InvoicePaid => invoice_paid().boxed(),
        EventType::InvoiceCancelled => invoice_cancelled().boxed(),
        EventType::PaymentDetected => payment_detected().boxed(),
        EventType::PaymentConfirming => payment_confirming().boxed(),
        EventType::PaymentConfirmed => payment_confirmed().boxed(),
        EventType::PaymentFailed => payment_failed().boxed(),
        EventType::SettlementCreated => settlement_created().boxed(),
        EventType::SettlementCompleted => settlement_completed().boxed(),
        EventType::SettlementFailed => settlement_failed().boxed(),
        EventType::MerchantCreated => merchant_created().boxed(),
        EventType::MerchantSuspended => merchant_suspended().boxed(),
        EventType::SettingsUpdated => settings_updated().boxed(),
        EventType::MerchantReinstated => merchant_reinstated().boxed(),
        EventType::WebhookEndpointDisabled => webhook_endpoint_disabled().boxed(),
    }
}

/// Valid envelopes of `event_type`.
pub fn envelope(event_type: EventType) -> impl Strategy<Value = Envelope> {
    (
        payload(event_type),
        event_id(),
        metadata(),
        timestamp(),
        1i64..86_400,
        proptest::option::of(correlation_id()),
        proptest::option::of(event_id()),
    )
        .prop_filter_map(
            "an event does not cause itself",
            move |(
                (aggregate_id, event_data),
                event_id,
                metadata,
                timestamp,
                lead,
                correlation_id,
                causation_id,
            )| {
                // An invoice is created before it expires.
                let timestamp = match &event_data {
                    EventData::InvoiceCreated(created) => {
                        created.expires_at - Duration::seconds(lead)
                    }
                    _ => timestamp,
                };
                if causation_id == Some(event_id) {
                    return None;
                }
                let parts = EnvelopeParts {
                    event_id,
                    aggregate_id,
                    event_data,
                    metadata,
                    timestamp,
                    correlation_id,
                    causation_id,
                };
                // A generator that builds invalid events is a bug in the test: fail loudly rather than skip.
                Some(
                    Envelope::from_parts(parts).unwrap_or_else(|e| {
                        panic!("generated an invalid {event_type} envelope: {e}")
                    }),
                )
            },
        )
}
