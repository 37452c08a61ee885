-- The transactional outbox (crates/outbox). Services append events in their own transaction; the
-- outbox-publisher produces them to Kafka and deletes them once the broker has acknowledged them.

CREATE TABLE outbox (
    -- Allocated inside append(), after the per-key lock is taken, so for one partition key the id order is the
    -- commit order of the writers' transactions. Across keys it means nothing (and need not).
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    topic          text        NOT NULL,
    partition_key  text        NOT NULL,
    -- Hash bucket of partition_key (0..63): the unit of ownership among publisher replicas.
    bucket         smallint    NOT NULL CHECK (bucket BETWEEN 0 AND 63),
    aggregate_type text        NOT NULL,
    aggregate_id   uuid        NOT NULL,
    event_type     text        NOT NULL,
    event_version  integer     NOT NULL CHECK (event_version > 0),
    -- The canonical encoding, byte for byte what is published (json keeps the text as written).
    payload        json        NOT NULL,
    -- Kafka headers derived from the envelope: [["name", "value"], …].
    headers        jsonb       NOT NULL DEFAULT '[]',
    -- Insertion time (clock_timestamp, not the transaction's start), for backlog age and commit-to-ack latency.
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Publishing failures: attempts so far, the last error, and when the row was set aside as poison.
    attempts       integer     NOT NULL DEFAULT 0,
    last_error     text,
    quarantined_at timestamptz
);

-- The publisher's scan: the oldest publishable rows of the buckets it owns.
CREATE INDEX outbox_publishable ON outbox (bucket, id) WHERE quarantined_at IS NULL;
-- Keys blocked behind a quarantined row (later events of the key wait for release or drop).
CREATE INDEX outbox_quarantined_keys ON outbox (partition_key) WHERE quarantined_at IS NOT NULL;

-- Live publisher replicas, for sharing the buckets fairly; a replica's advisory locks say which it owns.
CREATE TABLE outbox_publishers (
    instance_id  uuid        PRIMARY KEY,
    hostname     text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    buckets      smallint[]  NOT NULL DEFAULT '{}'
);

-- Rows dropped by an operator (checkoutctl outbox drop) are kept here, never silently deleted.
CREATE TABLE outbox_dropped (
    LIKE outbox INCLUDING DEFAULTS,
    dropped_at timestamptz NOT NULL DEFAULT now(),
    dropped_by text        NOT NULL,
    reason     text        NOT NULL
);
