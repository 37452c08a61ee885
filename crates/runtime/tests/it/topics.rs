//! Every topic a consumer group reads has its dead-letter topic declared in `deploy/kafka/topics.yaml` (so `make
//! up` / `checkoutctl topics apply` create it and the consumer's start-up check finds it), and the consumer
//! refuses client properties that would break its delivery guarantees.

use std::collections::BTreeSet;

use runtime::policy::{GROUPS, GroupPolicy, dead_letter_topic};
use runtime::{Consumer, RuntimeError};
use topology::model::TopologyFile;

use crate::helpers::*;

#[test]
fn every_topic_a_group_consumes_has_a_declared_dead_letter_topic() {
    let file = TopologyFile::load(&testkit::workspace_root().join("deploy/kafka/topics.yaml"))
        .expect("deploy/kafka/topics.yaml parses");
    let declared: BTreeSet<&str> = file
        .dead_letter_topics
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    let mut consumed = BTreeSet::new();
    for group in GROUPS {
        for topic in GroupPolicy::spec(group).expect("a spec group").topics {
            consumed.insert((group, topic));
        }
    }
    let missing: Vec<String> = consumed
        .iter()
        .filter(|(_, topic)| !declared.contains(dead_letter_topic(topic).as_str()))
        .map(|(group, topic)| {
            format!(
                "{group} reads {topic}, whose {} is not declared",
                dead_letter_topic(topic)
            )
        })
        .collect();
    assert!(missing.is_empty(), "{missing:#?}");
    assert!(
        consumed.len() >= 7,
        "every group's topics were checked: {consumed:?}"
    );
}

#[tokio::test]
async fn client_properties_that_would_break_delivery_are_refused_at_build() {
    let policy = GroupPolicy::spec(runtime::policy::SETTLEMENT_PROCESSING).unwrap();
    for (key, value) in [
        ("transactional.id", "mine"),
        ("group.protocol", "consumer"),
        ("enable.gapless.guarantee", "false"),
        ("enable.idempotence", "false"),
        ("isolation.level", "read_uncommitted"),
    ] {
        let mut kafka = kafka();
        kafka.client.insert(key.into(), value.into());
        let built = Consumer::builder(policy.clone(), kafka)
            .handler(Scripted::ok())
            .database(
                sqlx::postgres::PgPoolOptions::new()
                    .connect_lazy(&testkit::infra().database_url)
                    .unwrap(),
            )
            .build();
        match built {
            Err(RuntimeError::Config(why)) => assert!(why.contains(key), "{key}: {why}"),
            Err(other) => panic!("{key}: expected a configuration error, got {other}"),
            Ok(_) => panic!("{key}={value} was accepted"),
        }
    }
}
