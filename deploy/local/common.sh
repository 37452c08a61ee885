# shellcheck shell=bash
# Shared helpers of the local provisioning scripts (up, down, run, fetch-kafka, kafka-cli).
# Sourced, never executed. Everything lives under $DEV (the git-ignored .dev/ of the checkout).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEV="${CHECKOUT_DEV_DIR:-$ROOT/.dev}"
LOGS="$DEV/logs"
RUN="$DEV/run"
KAFKA_POM="$ROOT/deploy/local/kafka/pom.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")"
KAFKA_LIBS="$DEV/cache/kafka-$KAFKA_VERSION/libs"
JMX_EXPORTER_VERSION="$(sed -n 's:.*<jmx-exporter.version>\(.*\)</jmx-exporter.version>.*:\1:p' "$KAFKA_POM")"
JMX_EXPORTER_JAR="$DEV/cache/jmx-exporter-$JMX_EXPORTER_VERSION/jmx_prometheus_javaagent-$JMX_EXPORTER_VERSION.jar"
# The Prometheus JMX exporter of broker node n listens on 127.0.0.1:$((JMX_EXPORTER_BASE_PORT + n - 1)) for the
# 1-broker cluster (9308) and on 127.0.0.1:$((JMX_EXPORTER_BASE_PORT + n)) for the 3-broker one (9309..9311), so
# both clusters can run side by side. deploy/local/run reads the ports from .dev/kafka/b*/ports.
JMX_EXPORTER_BASE_PORT=9308
# Kafka's MirrorMaker 2 (connect-mirror and Connect's runtime) for the disaster-recovery drill: a pom and a cache
# of their own (deploy/local/kafka/mirror-maker/pom.xml), never on a broker's classpath.
MM2_POM="$ROOT/deploy/local/kafka/mirror-maker/pom.xml"
MM2_VERSION="$(sed -n 's:.*<mirror-maker.version>\(.*\)</mirror-maker.version>.*:\1:p' "$MM2_POM")"
MM2_LIBS="$DEV/cache/mirror-maker-$MM2_VERSION/libs"

mkdir -p "$LOGS" "$RUN"

say()  { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
warn() { printf '\033[33mwarning:\033[0m %s\n' "$*" >&2; }
die()  { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# Prints the last lines of a log file to stderr, for failures.
show_tail() {
  local file="$1" lines="${2:-40}"
  if [[ -f "$file" ]]; then
    printf -- '--- last %s lines of %s ---\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" >&2
    printf -- '---\n' >&2
  fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True when the process whose PID is in file $1 is alive and its command line contains $2
# (guards against a recycled PID belonging to some other program).
pid_alive() {
  local pidfile="$1" marker="$2" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker"
}

# Stops the process recorded in $1 (if it is ours: see pid_alive), waiting up to $3 seconds before SIGKILL.
stop_pidfile() {
  local pidfile="$1" marker="$2" grace="${3:-20}" pid i
  if pid_alive "$pidfile" "$marker"; then
    pid="$(cat "$pidfile")"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      warn "pid $pid ($(basename "$pidfile" .pid)) did not stop within ${grace}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

# Java 17 or newer is required by Kafka 4.x.
require_java() {
  command -v java >/dev/null 2>&1 || die "Java is not installed: Kafka $KAFKA_VERSION needs Java 17 or newer (e.g. apt-get install openjdk-17-jre-headless)"
  local version major
  version="$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)"
  major="${version%%.*}"
  [[ "$major" == 1 ]] && major="$(echo "$version" | cut -d. -f2)"
  [[ "$major" =~ ^[0-9]+$ ]] || die "cannot read the Java version from 'java -version' (got '$version')"
  ((major >= 17)) || die "Java $version is too old: Kafka $KAFKA_VERSION needs Java 17 or newer"
}

# The classpath of the cached Kafka jars; fetches them first when the cache is missing or incomplete.
kafka_classpath() {
  if [[ ! -f "$KAFKA_LIBS/.complete" ]]; then
    "$ROOT/deploy/local/fetch-kafka" >&2
  fi
  printf '%s/*' "$KAFKA_LIBS"
}

# The classpath of the cached MirrorMaker 2 jars; fetches them first when the cache is missing or incomplete.
mirror_maker_classpath() {
  if [[ ! -f "$MM2_LIBS/.complete" ]]; then
    "$ROOT/deploy/local/fetch-kafka" --mirror-maker >&2 || die "fetching MirrorMaker 2 failed"
  fi
  printf '%s/*' "$MM2_LIBS"
}

# The path of the cached JMX exporter agent jar; fetches it (with the Kafka jars, if those are missing too) first.
jmx_exporter_agent() {
  if [[ ! -f "$JMX_EXPORTER_JAR" ]]; then
    "$ROOT/deploy/local/fetch-kafka" >&2
  fi
  printf '%s' "$JMX_EXPORTER_JAR"
}

# Where a project-local PostgreSQL cluster lives: .dev/$1 (default pg: the one deploy/local/up runs; bench-pg uses
# bench-pg), unless we are root and the `postgres` system user (which the server runs as) cannot reach it — a
# checkout under a private home directory — in which case a directory of its own under /var/tmp, named after this
# checkout and the cluster. Its server log is pg.log inside it.
pg_dir() {
  local name="${1:-pg}"
  local dir="$DEV/$name"
  if [[ "$(id -u)" == 0 ]] && id postgres >/dev/null 2>&1; then
    mkdir -p "$dir"
    chown postgres "$dir"
    if ! runuser -u postgres -- test -w "$dir"; then
      local suffix=""; [[ "$name" == pg ]] || suffix="-$name"
      dir="/var/tmp/crypto-checkout-pg-$(printf '%s' "$ROOT" | md5sum | cut -c1-12)$suffix"
      mkdir -p "$dir"
      chown postgres "$dir"
    fi
  fi
  echo "$dir"
}

# The server options of every project-local cluster (deploy/local/up's and bench-pg's):
# max_connections: every parallel test opens its own pool against its own database.
# autovacuum_naptime: tests and benchmarks start from empty tables; the first ANALYZE (which replaces plans
# cached while a table was empty — sequential scans that grow with the table) comes within seconds instead of
# a minute. Production keeps its own setting: its tables have statistics.
PG_SERVER_OPTIONS="-c max_connections=300 -c shared_buffers=128MB -c autovacuum_naptime=5s"

# Runs a PostgreSQL server program; as root it runs as the `postgres` system user, since the server refuses root.
as_pg_user() {
  if [[ "$(id -u)" == 0 ]]; then
    (cd / && runuser -u postgres -- "$@") # its cwd may be unreadable to postgres; every path is absolute
  else
    "$@"
  fi
}

pg_bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
  if [[ -z "$dir" ]] && command -v pg_ctl >/dev/null 2>&1; then dir="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"; fi
  echo "$dir"
}
