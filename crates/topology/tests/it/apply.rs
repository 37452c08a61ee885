//! Creation and automatic changes: an empty namespace gets all thirteen topics (4 core, 4 DLQs, their 4 parking
//! lots, the canary) exactly as the file says, a second apply changes nothing, a retention change is applied, and
//! a hand-made override is replaced by the file's set.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use topology::{ApplyOptions, Change, Disposition, Outcome, Plan, apply};

use crate::helpers::{
    assert_cluster_matches, changed, cluster, delete_namespace, isolated, observe, real_file,
};

const DEV: &str = "development";

#[tokio::test]
async fn apply_on_an_empty_cluster_creates_all_thirteen_topics_and_a_second_apply_changes_nothing()
{
    let cluster = cluster();
    let topology = isolated(real_file());
    let bootstrap = cluster.bootstrap_servers().to_string();

    // plan shows thirteen creations and changes nothing.
    let plan = Plan::read(&cluster, &topology, DEV).await.unwrap();
    assert_eq!(plan.changes.len(), 13, "{plan}");
    assert!(
        plan.changes.iter().all(|c| matches!(c, Change::Create(_))),
        "{plan}"
    );
    assert!(
        observe(&bootstrap, topology.system()).await.is_empty(),
        "plan must not create anything"
    );

    let report = apply(&cluster, &topology, DEV, &ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(report.outcome(), Outcome::Applied, "{report}");
    assert_eq!(report.applied.len(), 13);
    assert_cluster_matches(&bootstrap, &topology, DEV).await;

    let again = apply(&cluster, &topology, DEV, &ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(again.outcome(), Outcome::InSync, "{}\n{again}", again.plan);
    assert!(again.applied.is_empty() && again.pending.is_empty());
    assert_eq!(again.plan.in_sync.len(), 13);
    assert_cluster_matches(&bootstrap, &topology, DEV).await;

    delete_namespace(&bootstrap, topology.system()).await;
}

#[tokio::test]
async fn a_retention_change_is_applied_automatically() {
    let cluster = cluster();
    let topology = isolated(real_file());
    let bootstrap = cluster.bootstrap_servers().to_string();
    apply(&cluster, &topology, DEV, &ApplyOptions::default())
        .await
        .unwrap();

    let domain = format!("{}.domain-events", topology.system());
    let longer = changed(&topology, |file| {
        file.topic_mut(&domain).unwrap().retention = "45d".parse().unwrap()
    });
    let plan = Plan::read(&cluster, &longer, DEV).await.unwrap();
    let [Change::AlterConfigs { topic, diffs, .. }] = plan.changes.as_slice() else {
        panic!("{plan}")
    };
    assert_eq!(topic, &domain);
    assert_eq!(diffs.len(), 1, "{plan}");
    assert_eq!(
        (
            diffs[0].key.as_str(),
            diffs[0].live.as_deref(),
            diffs[0].desired.as_deref()
        ),
        ("retention.ms", Some("2592000000"), Some("3888000000"))
    );

    let report = apply(&cluster, &longer, DEV, &ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(report.outcome(), Outcome::Applied, "{report}");
    let observed = observe(&bootstrap, topology.system()).await;
    assert_eq!(observed[&domain].overrides["retention.ms"], "3888000000");
    assert_cluster_matches(&bootstrap, &longer, DEV).await;

    delete_namespace(&bootstrap, topology.system()).await;
}

#[tokio::test]
async fn a_hand_made_override_is_replaced_by_the_files_complete_set() {
    let cluster = cluster();
    let topology = isolated(real_file());
    let bootstrap = cluster.bootstrap_servers().to_string();
    apply(&cluster, &topology, DEV, &ApplyOptions::default())
        .await
        .unwrap();

    // Someone sets retention.bytes by hand with the (non-incremental) AlterConfigs: every other override of
    // the topic is dropped back to the broker defaults.
    let topic = format!("{}.notification-events", topology.system());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let by_hand =
        AlterConfig::new(ResourceSpecifier::Topic(&topic)).set("retention.bytes", "1000000");
    let results = admin
        .alter_configs([&by_hand], &AdminOptions::new())
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    wait_until_observed(&bootstrap, topology.system(), &topic, |o| {
        o.overrides.contains_key("retention.bytes")
    })
    .await;

    let plan = Plan::read(&cluster, &topology, DEV).await.unwrap();
    let [Change::AlterConfigs { diffs, .. }] = plan.changes.as_slice() else {
        panic!("{plan}")
    };
    assert!(
        diffs
            .iter()
            .any(|d| d.key == "retention.bytes" && d.desired.is_none()),
        "{plan}"
    );
    assert!(
        diffs
            .iter()
            .any(|d| d.key == "retention.ms" && !d.live_is_override),
        "{plan}"
    );

    let report = apply(&cluster, &topology, DEV, &ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(report.outcome(), Outcome::Applied, "{report}");
    assert_cluster_matches(&bootstrap, &topology, DEV).await;
    assert_eq!(report.plan.count(Disposition::Manual), 0);

    delete_namespace(&bootstrap, topology.system()).await;
}

async fn wait_until_observed(
    bootstrap: &str,
    system: &str,
    topic: &str,
    done: impl Fn(&crate::helpers::Observed) -> bool,
) {
    for _ in 0..100 {
        if observe(bootstrap, system)
            .await
            .get(topic)
            .is_some_and(&done)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{topic} never reached the expected state");
}
