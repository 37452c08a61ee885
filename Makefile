# The two commands of the README: `make run` (the main job) and `make test` (the whole suite). Both bring the
# local stack up first (Kafka from Maven Central, PostgreSQL from the system's packages; see deploy/local/).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Our machines have 2 cores: keep builds from oversubscribing them. Integration tests mostly wait on the broker
# and the database, so a few more test threads than cores pays off.
export CARGO_BUILD_JOBS ?= 2
# CI builds once from a fresh clone: incremental caches would only double target/ (they once filled CI's disk).
ifdef CI
export CARGO_INCREMENTAL ?= 0
endif
TEST_THREADS ?= 4
BROKERS ?= 1
# make run: the simulator's invoices per second (empty: deploy/local/run's default) and how long to run (empty:
# until Ctrl-C).
RATE ?=
RUN_FOR ?=
CARGO ?= cargo
# Run a command with the stack's environment (.dev/env) exported.
WITH_ENV := set -a && . ./.dev/env && set +a &&

.PHONY: help up down clean build tools test test-cluster dr-drill restore-drill chaos-broker chaos deploy-check deploy-topics deploy-rules run fmt fmt-check lint ci bench bench-quiet bench-events bench-outbox bench-peers bench-runtime bench-e2e bench-verify bench-webhooks bench-memory

help: ## Show the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

up: ## Start Kafka (BROKERS=1|3) and PostgreSQL, apply migrations, write .dev/env. Idempotent.
	@BROKERS=$(BROKERS) ./deploy/local/up

down: ## Stop exactly what `make up` / `make run` started.
	@./deploy/local/down

clean: down ## Stop everything and delete .dev/ (data, logs, Kafka jars). Keeps target/.
	rm -rf .dev /var/tmp/crypto-checkout-pg-$$(printf "%s" "$(CURDIR)" | md5sum | cut -c1-12)

build: ## Build every crate and binary.
	$(CARGO) build --workspace --all-targets

tools: ## Install kustomize, kubeconform (go install, into .dev/tools/bin), docker-compose and prometheus/promtool (apt) for the deploy and monitoring tests.
	@./deploy/local/tools >/dev/null

test: up tools ## The whole test suite against the real broker and database (and deploy/k8s, docker-compose.yml offline).
	$(WITH_ENV) $(CARGO) test --workspace --no-fail-fast -- --test-threads=$(TEST_THREADS)

deploy-check: tools ## Only the offline deployment checks: every overlay through kustomize + kubeconform, the policy tests, docker-compose config, the topics export, the monitoring rules and dashboards.
	$(CARGO) test -p testkit --test it -- k8s:: compose:: monitoring::
	$(CARGO) test -p checkoutctl --lib topics_cmd

deploy-topics: ## Rewrite deploy/k8s/overlays/*/kafka-topics.yaml from deploy/kafka/topics.yaml (checkoutctl topics export).
	$(CARGO) build -q -p checkoutctl
	for env in development staging production dr; do \
	  $(CARGO) run -q -p checkoutctl -- topics export --format strimzi --env $$env -o deploy/k8s/overlays/$$env/kafka-topics.yaml || exit 1; \
	done

deploy-rules: ## Rewrite deploy/k8s/base/prometheus-rules.yaml and kafka-metrics.yaml from deploy/monitoring (the alert rules and the brokers' JMX exporter rules).
	./deploy/monitoring/export-k8s

test-cluster: ## Tests that need the 3-broker cluster (production profile: RF 3, min ISR 2).
	@BROKERS=3 SKIP_MIGRATE=1 ./deploy/local/up
	$(WITH_ENV) $(CARGO) test -p topology --test cluster -- --test-threads=1

run: up tools ## Start every service, Prometheus (127.0.0.1:9090), the dev-sandbox and the checkout simulator at RATE invoices/s (4); RUN_FOR=SECONDS stops by itself and exits with checkoutctl verify's status; Ctrl-C stops them.
	$(CARGO) build --workspace --bins
	@RATE=$(RATE) RUN_FOR=$(RUN_FOR) ./deploy/local/run

dr-drill: ## Disaster-recovery drill: primary and DR 3-broker clusters + MirrorMaker 2 (deploy/local/dr), primary SIGKILLed under traffic, `checkoutctl dr failover`, RTO/RPO vs the spec (< 5 min / < 30 s), verify. Exits non-zero on a violation. Not part of `make test`.
	@set -a && . ./.dev/env && set +a && ./deploy/local/dr up --fresh
	@set -a && . ./.dev/env && . ./.dev-dr/drill.env && set +a && export KAFKA_BOOTSTRAP_SERVERS="$$DR_PRIMARY_BOOTSTRAP" && \
	  rc=0 && $(CARGO) test -q -p checkoutctl --bench dr_drill || rc=$$?; ./deploy/local/dr down; exit $$rc

restore-drill: up ## Topic-corruption drill on make up's stack (a database, topics and groups of its own): the domain topic deleted under traffic, restored from the continuous `checkoutctl topics backup` by the runbook (`restore --repoint-groups`); RTO/RPO vs the spec (< 2 h / < 15 min), the outage's events counted, verify (RESTORE_DRILL_INVOICES, _RATE, _CORRUPT_AFTER, _FLUSH, _KILL_BACKUP=1). Summary in target/restore-drill/. Not part of `make test`.
	$(CARGO) build -p outbox-publisher -p settlement -p projections -p audit --bins
	$(WITH_ENV) $(CARGO) test -q -p checkoutctl --bench restore_drill

chaos-broker: ## Broker failure measured: on the 3-broker primary of deploy/local/dr (RF 3, min ISR 2) under traffic, SIGKILL the leader of a busy partition; RTO until producer and every group progress, RPO = acknowledged events lost, vs the spec (< 30 s / 0); verify. Not part of `make test`.
	@set -a && . ./.dev/env && set +a && DR_PRIMARY_ONLY=1 ./deploy/local/dr up --fresh
	@set -a && . ./.dev/env && . ./.dev-dr/drill.env && set +a && export KAFKA_BOOTSTRAP_SERVERS="$$DR_PRIMARY_BOOTSTRAP" DR_DRILL_MODE=broker && \
	  rc=0 && $(CARGO) test -q -p checkoutctl --bench dr_drill || rc=$$?; ./deploy/local/dr down; exit $$rc

chaos: ## Chaos run: every service binary (2 replicas where the spec has >1 consumer) on the 3-broker primary of deploy/local/dr, the simulator for CHAOS_EVENTS (100000) records, seeded SIGKILLs (>= 20), a broker SIGKILL, PostgreSQL cut 10-30 s by a proxy (CHAOS_SEED, CHAOS_RATE, CHAOS_PG_CUTS); then verify, nothing lost or doubled. Summary in target/chaos/. Needs make up's PostgreSQL. Not part of `make test`.
	$(CARGO) build --workspace --bins
	@set -a && . ./.dev/env && set +a && DR_PRIMARY_ONLY=1 ./deploy/local/dr up --fresh
	@set -a && . ./.dev/env && . ./.dev-dr/drill.env && set +a && export KAFKA_BOOTSTRAP_SERVERS="$$DR_PRIMARY_BOOTSTRAP" && \
	  rc=0 && $(CARGO) test -q -p checkoutctl --bench chaos || rc=$$?; ./deploy/local/dr down; exit $$rc

bench-quiet: up ## Before a benchmark: drop the test databases and topics tests left more than BENCH_QUIET_MINUTES (10) ago; hundreds of them slow PostgreSQL and the broker down (every bench-* target runs it).
	@./deploy/local/bench-quiet

bench: bench-quiet ## Every benchmark, one after the other, into one report: target/bench/report.md (figures, load average during each part, the commit); BENCH_PARTS="bench-outbox ..." runs a subset. Figures are printed, never asserted.
	@./deploy/local/bench-report

bench-events: ## Event codec: decode+validate and encode of ~1 KiB envelopes (criterion).
	$(CARGO) bench -p events --bench codec

bench-runtime: bench-quiet ## Consumer runtime: no-op handler records/s at-least-once vs exactly-once (a) and (b); a resumed partition's wait behind a held fetch.
	$(WITH_ENV) BENCH_RECORDS=$${BENCH_RECORDS:-1000000} $(CARGO) bench -p runtime --bench throughput
	$(WITH_ENV) $(CARGO) bench -p runtime --bench resume

bench-e2e: bench-quiet ## Projections, audit, analytics and settlement at 500, 1000, 2000 events/s (10k invoices each): commit → read model and payment → SettlementCompleted p50/p99, catch-up per group, checked against the truth.
	$(WITH_ENV) E2E_RATES=$${E2E_RATES:-500,1000,2000} $(CARGO) bench -p flows --bench e2e

bench-webhooks: bench-quiet ## Webhooks at 500 events/s with one merchant in ten hanging: commit → received p50/p99 for the healthy endpoints (BENCH_WEBHOOKS_RATE, _MERCHANTS, _INVOICES, _HANGING_PCT).
	$(WITH_ENV) $(CARGO) bench -p webhooks --bench delivery

bench-verify: bench-quiet ## `checkoutctl verify` on ~100k invoices filled through the real services: invoices, settlements, ledger rows, seconds per check and in total (BENCH_VERIFY_INVOICES, BENCH_VERIFY_RUNS).
	$(WITH_ENV) $(CARGO) bench -p checkoutctl --bench verify

bench-memory: bench-quiet ## RSS of every service binary (release) with ~1M events of backlog in front of it, sampled over time, vs the 150 MiB limit (BENCH_MEMORY_EVENTS, BENCH_MEMORY_SECS).
	$(CARGO) build --release --workspace --bins
	$(WITH_ENV) $(CARGO) bench -p flows --bench memory

bench-outbox: bench-quiet ## Outbox figures: 1M-event drain, commit→ack p50/p99 at 2k/s, ratio to kafka-producer-perf-test.
	$(WITH_ENV) $(CARGO) bench -p outbox-publisher --bench outbox

bench-peers: bench-quiet ## Outbox publisher vs Debezium's outbox router (embedded engine 3.6.1, pgoutput) vs kafka-producer-perf-test on the same 1M backlog (BENCH_EVENTS), same broker, a PostgreSQL of its own with wal_level=logical (deploy/local/bench-pg); prints the ratios.
	./deploy/local/debezium/run --prepare
	@url="$$(./deploy/local/bench-pg start)" && set -a && . ./.dev/env && set +a && \
	  rc=0 && BENCH_DATABASE_URL="$$url" $(CARGO) bench -p outbox-publisher --bench peers || rc=$$?; ./deploy/local/bench-pg stop; exit $$rc

fmt: ## Format the code.
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint: fmt-check ## rustfmt check and clippy with warnings as errors.
	$(CARGO) clippy --workspace --all-targets -- -D warnings

ci: lint test test-cluster ## What .ci/run does.
