-- Bookkeeping shared by every consumer group (see crates/runtime).

-- Idempotency: the events a consumer group has applied. A handler inserts (group, event_id) in the same
-- transaction as its own writes; a conflict means the event was applied before and the handler does nothing.
CREATE TABLE processed_events (
    consumer_group text        NOT NULL,
    event_id       uuid        NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);

-- Exactly-once with a database sink: the next offset to consume per (group, topic, partition), written in the
-- same transaction as the handler's writes; on assignment the consumer seeks to it.
CREATE TABLE consumer_offsets (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL CHECK (partition >= 0),
    next_offset    bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
