//! An SMTP server that accepts connections and never answers (issue 18, item 5): each e-mail attempt ends at the
//! attempt's deadline with that reason in the delivery log, nothing waits on it — SMS go out meanwhile — and once
//! the server speaks again each e-mail ends sent or failed (its retries spent), none sent twice.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::helpers::{self, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_smtp_server_that_never_answers_times_out_with_its_reason_and_delays_nothing_else() {
    let setup = Setup::new().await;
    setup.smtp.silence(true);
    let service = setup
        .start(|s| s.email.timeout = Duration::from_secs(1))
        .await;
    let (emails, sms) = helpers::emails_and_sms(3, "+1555000200");
    let all: Vec<_> = emails.iter().chain(&sms).cloned().collect();
    setup.request(&all).await;

    // Every SMS goes out while the e-mails hang.
    setup
        .posts(&helpers::sms_path(), sms.len(), Duration::from_secs(30))
        .await;
    // Each e-mail has spent at least one attempt, ended by the timeout, said in the log.
    let rows = setup
        .rows_until("an attempt at every e-mail", |rows| {
            rows.iter().filter(|r| r.1 == "email" && r.3 >= 1).count() == emails.len()
        })
        .await;
    for r in rows.iter().filter(|r| r.1 == "email") {
        let error = r.5.as_deref().unwrap_or_default().to_lowercase();
        // lettre's own timeout, or the attempt's deadline (channels::deadline) when the greeting never comes.
        assert!(
            error.contains("timed out")
                || error.contains("timeout")
                || error.contains("no answer within"),
            "{r:?}"
        );
        assert_ne!(r.2, "sent", "{r:?}");
    }
    assert!(setup.smtp.mails().is_empty());

    // The server answers again: each e-mail ends sent or failed, none accepted twice.
    setup.smtp.silence(false);
    let recovered = setup
        .rows_until("every row settled", |r| {
            r.len() == all.len() && r.iter().all(|r| r.2 != "pending")
        })
        .await;
    let sent: BTreeSet<String> = setup
        .smtp
        .mails()
        .iter()
        .filter_map(|m| m.header("Message-ID"))
        .collect();
    let expected: BTreeSet<String> = emails.iter().map(helpers::message_id).collect();
    for r in recovered.iter().filter(|r| r.1 == "email") {
        assert!(r.2 == "sent" || r.2 == "failed", "{r:?}");
    }
    assert!(sent.is_subset(&expected), "{sent:?}");
    assert_eq!(
        setup.smtp.mails().len(),
        sent.len(),
        "no e-mail accepted twice"
    );
    service.stop().await;
}
