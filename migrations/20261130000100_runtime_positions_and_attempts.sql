-- Consumer runtime, round two (crates/runtime; docs/decisions/0025-runtime-batches-and-rebalances.md).

-- Mode (b) positions. Besides next_offset, the offsets above it that are done too (`ahead`: records applied
-- while an earlier record of another key waited for its retries; skipped when they arrive again), and a
-- generation that every write increments: the compare-and-set that fences a zombie consumer (next_offset alone
-- may stay the same between two writes, so it cannot be the expected value).
ALTER TABLE consumer_offsets
    ADD COLUMN ahead      bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN generation bigint   NOT NULL DEFAULT 1;

-- Failed attempts per record of every group, so that a rebalance, a restart or a crash neither gives a poison
-- record a fresh retry budget nor falsifies the DLQ's attempt count. Written after each failed attempt, deleted
-- once the record is done; rows below a partition's first delivered offset are removed when a lane starts.
CREATE TABLE consumer_retry_attempts (
    consumer_group        text        NOT NULL,
    topic                 text        NOT NULL,
    partition             integer     NOT NULL CHECK (partition >= 0),
    "offset"              bigint      NOT NULL CHECK ("offset" >= 0),
    attempts              integer     NOT NULL CHECK (attempts > 0),
    business_failures     integer     NOT NULL DEFAULT 0,
    consecutive_transient integer     NOT NULL DEFAULT 0,
    first_failure         timestamptz NOT NULL,
    last_failure          timestamptz NOT NULL,
    last_class            text        NOT NULL
        CHECK (last_class IN ('transient', 'schema', 'business', 'infrastructure')),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition, "offset")
);
