//! The services of the bus and their operations ports: one table. The services take their default `http.listen`
//! from it, `deploy/local/run` reads it from this file (each `name` followed by its `ops_port`), and a test checks
//! that docker-compose agrees with it.

/// A long-running service: its binary name and the port of its operations server (`/health`, `/ready`,
/// `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: &'static str,
    pub ops_port: u16,
}

/// Every long-running service of the design, in start order. A binary of that name under `services/` must use
/// this port; binaries not yet written simply have no row in `make run` and docker-compose.
pub const SERVICES: &[ServiceSpec] = &[
    ServiceSpec {
        name: "outbox-publisher",
        ops_port: 9101,
    },
    ServiceSpec {
        name: "projections",
        ops_port: 9102,
    },
    ServiceSpec {
        name: "webhooks",
        ops_port: 9103,
    },
    ServiceSpec {
        name: "settlement",
        ops_port: 9104,
    },
    ServiceSpec {
        name: "analytics",
        ops_port: 9105,
    },
    ServiceSpec {
        name: "audit",
        ops_port: 9106,
    },
    ServiceSpec {
        name: "notifications",
        ops_port: 9107,
    },
    ServiceSpec {
        name: "bus-monitor",
        ops_port: 9108,
    },
    ServiceSpec {
        name: "payments",
        ops_port: 9109,
    },
];

/// The spec of the service called `name`.
pub fn spec(name: &str) -> Option<ServiceSpec> {
    SERVICES.iter().copied().find(|s| s.name == name)
}
