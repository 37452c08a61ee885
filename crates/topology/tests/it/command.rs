//! The command-line entry point (`topology::run`, which `checkoutctl topics` calls) with a file on disk: the
//! exit code of each situation, as a scheduled `plan --check` or `make up` would see it.

use std::path::{Path, PathBuf};

use topology::{ExportFormat, Outcome, Target, TopicsCommand, Topology, exit, exit_code, run};

use crate::helpers::{
    changed, cluster, delete_namespace, isolated, observe, real_file, write_temp,
};

fn target(file: &Path) -> Target {
    Target {
        env: "development".into(),
        file: file.to_path_buf(),
    }
}

fn plan_check(file: &Path) -> TopicsCommand {
    TopicsCommand::Plan {
        target: target(file),
        check: true,
    }
}

fn apply(file: &Path) -> TopicsCommand {
    TopicsCommand::Apply {
        target: target(file),
        approve_partition_increase: false,
    }
}

fn code(result: &Result<Outcome, topology::TopologyError>) -> std::process::ExitCode {
    exit_code(result)
}

#[tokio::test]
async fn each_situation_has_its_own_exit_code() {
    let bootstrap = cluster().bootstrap_servers().to_string();
    let topology = isolated(real_file());
    let file = write_temp(&topology);

    // Missing topics: drift that apply fixes by itself.
    let result = run(plan_check(&file), &bootstrap, &[]).await;
    assert_eq!(result.as_ref().unwrap(), &Outcome::Drift);
    assert_eq!(code(&result), std::process::ExitCode::from(exit::DRIFT));
    // Without --check, plan reports and exits 0.
    let plain = TopicsCommand::Plan {
        target: target(&file),
        check: false,
    };
    assert_eq!(run(plain, &bootstrap, &[]).await.unwrap(), Outcome::InSync);
    assert!(
        observe(&bootstrap, topology.system()).await.is_empty(),
        "plan changes nothing"
    );

    assert_eq!(
        run(apply(&file), &bootstrap, &[]).await.unwrap().code(),
        exit::APPLIED
    );
    assert_eq!(
        run(apply(&file), &bootstrap, &[]).await.unwrap().code(),
        exit::IN_SYNC
    );
    assert_eq!(
        run(plan_check(&file), &bootstrap, &[])
            .await
            .unwrap()
            .code(),
        exit::IN_SYNC
    );

    // A topic the file no longer knows: a human must act, in plan --check and apply alike.
    let analytics = format!("{}.analytics-events", topology.system());
    let without = changed(&topology, |f| {
        f.topics.retain(|t| t.name != analytics);
        f.dead_letter_topics.retain(|d| d.source != analytics);
    });
    let file = rewrite(&file, &without);
    assert_eq!(
        run(plan_check(&file), &bootstrap, &[])
            .await
            .unwrap()
            .code(),
        exit::NEEDS_APPROVAL
    );
    assert_eq!(
        run(apply(&file), &bootstrap, &[]).await.unwrap().code(),
        exit::NEEDS_APPROVAL
    );

    // A partition decrease: an error, for plan and apply.
    let narrower = changed(&topology, |f| {
        f.topic_mut(&analytics).unwrap().partitions = 1
    });
    let file = rewrite(&file, &narrower);
    let result = run(plan_check(&file), &bootstrap, &[]).await;
    assert!(
        matches!(result, Err(topology::TopologyError::Refused { .. })),
        "{result:?}"
    );
    assert_eq!(code(&result), std::process::ExitCode::from(exit::ERROR));
    assert!(run(apply(&file), &bootstrap, &[]).await.is_err());

    // An unknown environment: an error naming the known ones.
    let wrong = TopicsCommand::Plan {
        target: Target {
            env: "prod".into(),
            file: file.clone(),
        },
        check: true,
    };
    let err = run(wrong, &bootstrap, &[]).await.unwrap_err().to_string();
    assert!(err.contains("production"), "{err}");

    delete_namespace(&bootstrap, topology.system()).await;
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn export_writes_strimzi_resources_from_the_real_file() {
    let output = std::env::temp_dir().join(format!("{}.yaml", testkit::unique_name("strimzi")));
    let export = TopicsCommand::Export {
        target: Target {
            env: "production".into(),
            file: crate::helpers::real_file_path(),
        },
        format: ExportFormat::Strimzi,
        cluster: None,
        namespace: None,
        api_version: Default::default(),
        output: Some(output.clone()),
    };
    // Export needs no broker.
    assert_eq!(
        run(export, "127.0.0.1:1", &[]).await.unwrap(),
        Outcome::InSync
    );
    let yaml = std::fs::read_to_string(&output).unwrap();
    assert_eq!(yaml.matches("kind: KafkaTopic").count(), 13, "{yaml}");
    assert!(
        yaml.contains("strimzi.io/cluster: crypto-checkout"),
        "{yaml}"
    );
    assert!(
        yaml.contains("topicName: crypto-checkout.domain-events.dlq"),
        "{yaml}"
    );
    let _ = std::fs::remove_file(&output);
}

fn rewrite(path: &Path, topology: &Topology) -> PathBuf {
    std::fs::write(path, topology.file().to_yaml()).unwrap();
    path.to_path_buf()
}
