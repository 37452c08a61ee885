//! The merchant's notifications of what settlement decided (decision 0031): a `SettlementCompleted` and a
//! settlement held for a suspended merchant (`SettlementFailed { merchant_suspended }`) each request one e-mail to
//! the merchant, appended to the outbox with the events in the consumer's transaction.
//!
//! Guarantees: a notification's id is derived from the event that caused it (whose own id is derived from the
//! invoice, decision 0026), so a replay, a duplicate or a SIGKILL re-derives the same request and the
//! notifications service sends it once. No destination: the notifications service sends to the merchant's
//! e-mail of the merchant contract (or an override on file) when it sends; the locale is English.

use events::notification::{Channel, NotificationRequested, Recipient};
use events::payload::SettlementFailureReason;
use events::{Envelope, EventData, NotificationId};

/// The notifications `emitted` events ask for, in their order.
pub fn requests(emitted: &[Envelope]) -> Vec<NotificationRequested> {
    emitted.iter().filter_map(request).collect()
}

fn request(event: &Envelope) -> Option<NotificationRequested> {
    let settlement_id = event.aggregate_id().to_string();
    let (template, parameters) = match event.data() {
        EventData::SettlementCompleted(c) => (
            "settlement_completed",
            vec![
                ("settlement_id", settlement_id),
                ("invoice_id", c.invoice_id.to_string()),
                ("gross_amount", c.gross_amount.to_string()),
                ("fee_amount", c.platform_fee_amount.to_string()),
                ("net_amount", c.net_amount.to_string()),
                ("currency", c.currency.code().to_string()),
            ],
        ),
        EventData::SettlementFailed(f)
            if f.reason == SettlementFailureReason::MerchantSuspended =>
        {
            (
                "settlement_held",
                vec![
                    ("settlement_id", settlement_id),
                    ("invoice_id", f.invoice_id.to_string()),
                    ("net_amount", f.net_amount.to_string()),
                    ("currency", f.currency.code().to_string()),
                    ("reason", "merchant_suspended".to_string()),
                ],
            )
        }
        _ => return None,
    };
    Some(NotificationRequested {
        notification_id: NotificationId::derived(event.event_id(), &format!("{template}.email")),
        requested_at: event.timestamp(),
        recipient: Recipient::merchant(event.merchant_id()),
        channel: Channel::Email,
        template: template.to_string(),
        locale: "en".to_string(),
        parameters: parameters
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        destination: None,
        causation_id: Some(event.event_id()),
    })
}

#[cfg(test)]
mod tests {
    use events::examples::example;
    use events::{EventType, Publishable};

    use super::*;

    #[test]
    fn completed_and_held_settlements_ask_for_one_e_mail_each_with_a_derived_id() {
        let completed = example(EventType::SettlementCompleted);
        let failed = example(EventType::SettlementFailed);
        let created = example(EventType::SettlementCreated);
        let out = requests(&[created, completed.clone(), failed.clone()]);
        let EventData::SettlementFailed(f) = failed.data() else {
            unreachable!()
        };
        let expected = if f.reason == SettlementFailureReason::MerchantSuspended {
            2
        } else {
            1
        };
        assert_eq!(out.len(), expected);
        let first = &out[0];
        assert_eq!(first.template, "settlement_completed");
        assert_eq!(
            first.recipient,
            Recipient::merchant(completed.merchant_id())
        );
        assert_eq!(first.causation_id, Some(completed.event_id()));
        assert_eq!(
            requests(std::slice::from_ref(&completed))[0],
            *first,
            "derived, not random"
        );
        first.to_outbox_record().expect("a valid record");
        assert!(first.parameters["settlement_id"].starts_with("set_"));
    }
}
