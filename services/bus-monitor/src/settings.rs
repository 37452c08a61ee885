//! The `[service]` section of bus-monitor's configuration.
//!
//! Guarantees: unknown keys are errors; durations are typed; [`MonitorSettings::validate`] refuses settings that
//! cannot work (a zero interval, a window below 2, a canary timeout not above its interval, a group without
//! topics) at start-up.
//!
//! ```toml
//! [service]
//! poll_interval = "10s"
//! window = 10                  # commit observations judged per partition (Burrow's intervals)
//! groups = [{ group = "payment-ingestion", topics = ["crypto-checkout.integration-events"] }]
//! [service.canary]
//! topic = "crypto-checkout.canary"
//! interval = "1s"
//! timeout = "10s"
//! ```

use std::time::Duration;

use lag::GroupSpec;
use serde::{Deserialize, Serialize};

/// Monitor settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorSettings {
    /// How often offsets, watermarks and membership are read.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Bound of each broker request.
    #[serde(with = "humantime_serde")]
    pub kafka_timeout: Duration,
    /// Commit observations per partition judged by the status rules (Burrow's `intervals`).
    pub window: usize,
    /// End-offset samples kept per partition for lag in seconds (360 × 10 s = an hour of a busy partition).
    pub lag_table_size: usize,
    /// Lag at or below which a partition is OK (Burrow's `allowed-lag`).
    pub allowed_lag: i64,
    /// Watch the platform's groups (`runtime::policy::GROUPS`).
    pub platform_groups: bool,
    /// More groups to watch (`offsets = "database"` for a mode (b) group).
    pub groups: Vec<GroupSpec>,
    pub canary: CanarySettings,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(10),
            kafka_timeout: Duration::from_secs(10),
            window: 10,
            lag_table_size: 360,
            allowed_lag: 0,
            platform_groups: true,
            groups: Vec::new(),
            canary: CanarySettings::default(),
        }
    }
}

/// The end-to-end probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanarySettings {
    pub enabled: bool,
    /// Its own topic (declared in `deploy/kafka/topics.yaml`).
    pub topic: String,
    /// The group id its consumer carries (it assigns every partition itself and never commits, so replicas do
    /// not share probes).
    pub group: String,
    /// One probe per partition this often.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A probe not back within this is lost.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for CanarySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            topic: events::topics::CANARY.to_string(),
            group: "bus-monitor-canary".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid bus-monitor settings: {0}")]
pub struct InvalidSettings(String);

impl MonitorSettings {
    pub fn validate(&self) -> Result<(), InvalidSettings> {
        let bad = |why: &str| Err(InvalidSettings(why.to_string()));
        if self.poll_interval.is_zero() || self.kafka_timeout.is_zero() {
            return bad("service.poll_interval and service.kafka_timeout must be positive");
        }
        if self.window < 2 {
            return bad("service.window must be at least 2");
        }
        if self.lag_table_size < 2 {
            return bad("service.lag_table_size must be at least 2");
        }
        if let Some(g) = self
            .groups
            .iter()
            .find(|g| g.group.trim().is_empty() || g.topics.is_empty())
        {
            return Err(InvalidSettings(format!(
                "service.groups: group {:?} needs a name and at least one topic",
                g.group
            )));
        }
        if self.canary.enabled {
            if self.canary.interval.is_zero() || self.canary.timeout <= self.canary.interval {
                return bad(
                    "service.canary.timeout must be longer than a positive service.canary.interval",
                );
            }
            if self.canary.topic.trim().is_empty() {
                return bad("service.canary.topic is empty");
            }
        }
        Ok(())
    }

    /// The groups watched: the platform's (unless disabled) and the configured ones; a configured group of the
    /// same name replaces the platform's.
    pub fn watched_groups(&self) -> Vec<GroupSpec> {
        let mut groups: Vec<GroupSpec> = if self.platform_groups {
            lag::platform_groups()
        } else {
            Vec::new()
        };
        groups.retain(|g| !self.groups.iter().any(|c| c.group == g.group));
        groups.extend(self.groups.iter().cloned());
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let s = MonitorSettings::default();
        assert_eq!(s.poll_interval, Duration::from_secs(10));
        assert_eq!(s.window, 10);
        assert_eq!(s.canary.topic, "crypto-checkout.canary");
        assert_eq!(s.canary.interval, Duration::from_secs(1));
        assert_eq!(s.canary.timeout, Duration::from_secs(10));
        s.validate().unwrap();
        assert_eq!(s.watched_groups().len(), lag::platform_groups().len());
    }

    #[test]
    fn configured_groups_add_to_or_replace_the_platform_groups() {
        let s = MonitorSettings {
            groups: vec![
                GroupSpec {
                    group: "audit-logging".into(),
                    topics: vec!["x".into()],
                    offsets: lag::OffsetSource::Kafka,
                },
                GroupSpec {
                    group: "extra".into(),
                    topics: vec!["y".into()],
                    offsets: lag::OffsetSource::Database,
                },
            ],
            ..Default::default()
        };
        let groups = s.watched_groups();
        // audit-logging replaced, `extra` added.
        assert_eq!(groups.len(), lag::platform_groups().len() + 1);
        assert_eq!(
            groups
                .iter()
                .find(|g| g.group == "audit-logging")
                .unwrap()
                .topics,
            ["x"]
        );
        let bad = MonitorSettings {
            canary: CanarySettings {
                timeout: Duration::from_millis(500),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
