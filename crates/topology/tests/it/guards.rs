//! The guarded operations of the spec's "Topic Management" table: partition scaling only with approval, never
//! a partition decrease, and never a deletion.

use topology::{ApplyOptions, Change, Disposition, Outcome, Plan, TopologyError, apply};

use crate::helpers::{
    assert_cluster_matches, changed, cluster, delete_namespace, isolated, observe, real_file,
};

const DEV: &str = "development";

#[tokio::test]
async fn a_partition_increase_is_refused_without_approval_and_applied_with_it() {
    let cluster = cluster();
    let topology = isolated(real_file());
    let bootstrap = cluster.bootstrap_servers().to_string();
    apply(&cluster, &topology, DEV, &ApplyOptions::default())
        .await
        .unwrap();

    let analytics = format!("{}.analytics-events", topology.system());
    let wider = changed(&topology, |file| {
        file.topic_mut(&analytics).unwrap().partitions = 5
    });

    let report = apply(&cluster, &wider, DEV, &ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(report.outcome(), Outcome::NeedsApproval, "{report}");
    assert!(report.applied.is_empty(), "{report}");
    // The topic, its dead-letter topic and its parking lot, which follow the source's partition count.
    assert!(
        matches!(
            report.pending.as_slice(),
            [
                Change::IncreasePartitions { from: 3, to: 5, .. },
                Change::IncreasePartitions { from: 3, to: 5, .. },
                Change::IncreasePartitions { from: 3, to: 5, .. }
            ]
        ),
        "{report}"
    );
    assert!(
        report
            .plan
            .to_string()
            .contains("--approve-partition-increase"),
        "{}",
        report.plan
    );
    assert_eq!(
        observe(&bootstrap, topology.system()).await[&analytics].partitions,
        3,
        "unchanged without approval"
    );

    let approved = ApplyOptions {
        approve_partition_increase: true,
        ..ApplyOptions::default()
    };
    let report = apply(&cluster, &wider, DEV, &approved).await.unwrap();
    assert_eq!(report.outcome(), Outcome::Applied, "{report}");
    assert_cluster_matches(&bootstrap, &wider, DEV).await;

    delete_namespace(&bootstrap, topology.system()).await;
}

#[tokio::test]
async fn a_partition_decrease_is_refused_and_nothing_else_is_applied_either() {
    let cluster = cluster();
    let topology = isolated(real_file());
    let bootstrap = cluster.bootstrap_servers().to_string();
    apply(&cluster, &topology, DEV, &ApplyOptions::default())
        .await
        .unwrap();

    let system = topology.system().to_string();
    let analytics = format!("{system}.analytics-events");
    let domain = format!("{system}.domain-events");
    let narrower = changed(&topology, |file| {
        file.topic_mut(&analytics).unwrap().partitions = 2;
        // An automatic change in the same file must not be applied while the file asks for a refused one.
        file.topic_mut(&domain).unwrap().retention = "31d".parse().unwrap();
    });

    let plan = Plan::read(&cluster, &narrower, DEV).await.unwrap();
    // The topic, its dead-letter topic and its parking lot (which follow the source's partition count).
    assert_eq!(plan.count(Disposition::Refused), 3, "{plan}");
    let approved = ApplyOptions {
        approve_partition_increase: true,
        ..ApplyOptions::default()
    };
    let err = apply(&cluster, &narrower, DEV, &approved)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TopologyError::Refused { reasons } if reasons[0].contains(&analytics)),
        "{err}"
    );
    assert!(!err.is_retriable());

    assert_cluster_matches(&bootstrap, &topology, DEV).await;

    delete_namespace(&bootstrap, &system).await;
}

#[tokio::test]
async fn a_topic_removed_from_the_file_is_reported_and_not_deleted() {
    let cluster = cluster();
    let topology = isolated(real_file());
    let bootstrap = cluster.bootstrap_servers().to_string();
    apply(&cluster, &topology, DEV, &ApplyOptions::default())
        .await
        .unwrap();

    // Every core topic has a dead-letter topic that needs its source declared, so the DLQ is what goes.
    let analytics =
        events::topics::dead_letter_topic(&format!("{}.analytics-events", topology.system()));
    let without = changed(&topology, |file| {
        file.dead_letter_topics.retain(|d| d.name != analytics)
    });

    // Its parking lot goes with it (it is declared by the DLQ's entry).
    let plan = Plan::read(&cluster, &without, DEV).await.unwrap();
    let [
        Change::Unknown {
            topic,
            partitions: 3,
        },
        Change::Unknown {
            topic: parked,
            partitions: 3,
        },
    ] = plan.changes.as_slice()
    else {
        panic!("{plan}")
    };
    assert_eq!(topic, &analytics);
    assert_eq!(parked, &events::topics::parked_topic(&analytics));
    assert!(
        plan.to_string()
            .contains(&format!("--delete --topic {analytics}")),
        "{plan}"
    );

    let report = apply(&cluster, &without, DEV, &ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(report.outcome(), Outcome::NeedsApproval, "{report}");
    assert!(report.applied.is_empty());
    assert!(
        observe(&bootstrap, topology.system())
            .await
            .contains_key(&analytics),
        "the topic must still exist"
    );
    // The full file still matches: nothing else was touched.
    assert_cluster_matches(&bootstrap, &topology, DEV).await;

    delete_namespace(&bootstrap, topology.system()).await;
}
