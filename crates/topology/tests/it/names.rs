//! `events::topics` (what the code produces to and consumes from) and `deploy/kafka/topics.yaml` (what exists
//! on the clusters) name exactly the same topics, and every core topic's dead-letter topic, by the one rule
//! `events::topics::dead_letter_topic`, is declared with that core topic as its source. Operational topics
//! (the canary) are `events::topics::OPERATIONAL_TOPICS`.

use std::collections::BTreeSet;

use crate::helpers::real_file;

#[test]
fn the_file_declares_exactly_the_topics_of_events_topics() {
    let file = real_file();
    let core: BTreeSet<&str> = file.topics.iter().map(|t| t.name.as_str()).collect();
    let dead: BTreeSet<&str> = file
        .dead_letter_topics
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(
        core,
        BTreeSet::from(events::topics::CORE_TOPICS),
        "core topics: deploy/kafka/topics.yaml vs events::topics::CORE_TOPICS"
    );
    assert_eq!(
        dead,
        BTreeSet::from(events::topics::DEAD_LETTER_TOPICS),
        "dead-letter topics: deploy/kafka/topics.yaml vs events::topics::DEAD_LETTER_TOPICS"
    );
    let parked: BTreeSet<String> = file
        .dead_letter_topics
        .iter()
        .map(|d| d.parked_name())
        .collect();
    assert_eq!(
        parked,
        events::topics::PARKED_TOPICS
            .iter()
            .map(|t| t.to_string())
            .collect::<BTreeSet<_>>(),
        "parking lots: deploy/kafka/topics.yaml vs events::topics::PARKED_TOPICS"
    );
    for d in &file.dead_letter_topics {
        assert_eq!(d.parked_name(), events::topics::parked_topic(&d.name));
    }
    let operational: BTreeSet<&str> = file
        .operational_topics
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(
        operational,
        BTreeSet::from(events::topics::OPERATIONAL_TOPICS),
        "operational topics: deploy/kafka/topics.yaml vs events::topics::OPERATIONAL_TOPICS"
    );
}

#[test]
fn every_core_topic_has_its_dead_letter_topic_declared() {
    let file = real_file();
    for core in events::topics::CORE_TOPICS {
        let dlq = events::topics::dead_letter_topic(core);
        let declared = file
            .dead_letter_topics
            .iter()
            .find(|d| d.name == dlq)
            .unwrap_or_else(|| panic!("{dlq} (dead-letter topic of {core}) is not in topics.yaml"));
        assert_eq!(declared.source, core, "{dlq}");
        let source = file.topics.iter().find(|t| t.name == core).unwrap();
        assert_eq!(
            declared.retention, source.retention,
            "{dlq} keeps its records as long as {core}"
        );
    }
}
