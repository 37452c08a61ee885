-- Merchant webhooks (services/webhooks; docs/decisions/0029-webhooks.md).
--
-- At-least-once: the webhook-delivery consumer records, per partition batch, one message per event some endpoint
-- subscribes to and one delivery per (endpoint, event) — unique, the spec's idempotency method — before its
-- offsets are committed. The dispatcher then sends pending deliveries, one attempt row per try, under a lease so
-- that two replicas never send the same delivery at once and a killed one's work is taken over when the lease
-- runs out. Deliveries of one endpoint with the same order key (the event's partition key: the invoice or the
-- merchant) are sent in `position` order, one at a time.

-- A merchant's endpoints. Removing one keeps its row (and its delivery log) with `removed_at` set.
CREATE TABLE webhook_endpoints (
    endpoint_id     uuid        PRIMARY KEY,
    merchant_id     uuid        NOT NULL,
    url             text        NOT NULL CHECK (length(url) <= 2048),
    -- Webhook types subscribed to (`invoice.paid`); empty: every type.
    event_types     text[]      NOT NULL DEFAULT '{}',
    description     text        NOT NULL DEFAULT '',
    status          text        NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    disabled_reason text,
    disabled_at     timestamptz,
    -- Start of the current run of failed attempts (NULL after any success): the auto-disable rule's clock.
    failing_since   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    removed_at      timestamptz,
    CHECK ((status = 'disabled') = (disabled_at IS NOT NULL))
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id) WHERE removed_at IS NULL;

-- Signing secrets, encrypted (AES-256-GCM, WEBHOOK_ENCRYPTION_KEY; nonce ‖ ciphertext). Every secret whose
-- `expires_at` is NULL or in the future signs; a rotation sets the old one's `expires_at` to the end of its grace.
CREATE TABLE webhook_endpoint_secrets (
    endpoint_id uuid        NOT NULL REFERENCES webhook_endpoints (endpoint_id),
    secret_no   int         NOT NULL CHECK (secret_no > 0),
    sealed      bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    PRIMARY KEY (endpoint_id, secret_no)
);

-- One row per event that some endpoint subscribed to: the original record (for the body and, after the last
-- attempt, the dead letter with provenance).
CREATE TABLE webhook_messages (
    event_id         uuid        PRIMARY KEY,
    merchant_id      uuid        NOT NULL,
    event_type       text        NOT NULL,
    occurred_at      timestamptz NOT NULL,
    source_topic     text        NOT NULL,
    source_partition int         NOT NULL,
    source_offset    bigint      NOT NULL,
    source_timestamp bigint,
    record_key       bytea,
    record_value     bytea       NOT NULL,
    -- [[name, value or null], …] in the record's order (values as UTF-8 text).
    record_headers   jsonb       NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    delivery_id     uuid        PRIMARY KEY,
    -- `webhook-id`: the receiver's idempotency key, the same on every attempt and every redelivery.
    msg_id          text        NOT NULL,
    endpoint_id     uuid        NOT NULL REFERENCES webhook_endpoints (endpoint_id),
    event_id        uuid        NOT NULL REFERENCES webhook_messages (event_id),
    -- A redelivery (`checkoutctl webhooks redeliver|recover`) names the delivery it repeats.
    redelivery_of   uuid        REFERENCES webhook_deliveries (delivery_id),
    order_key       text        NOT NULL,
    position        bigint      NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        int         NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    lease_token     uuid,
    last_status     int,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CHECK ((status = 'pending') = (finished_at IS NULL))
);
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (endpoint_id, event_id)
    WHERE redelivery_of IS NULL;
-- The dispatcher's queues: the head of each (endpoint, order key).
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, order_key, position, created_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_oldest_pending ON webhook_deliveries (created_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at);

CREATE TABLE webhook_attempts (
    delivery_id      uuid        NOT NULL REFERENCES webhook_deliveries (delivery_id),
    attempt          int         NOT NULL CHECK (attempt > 0),
    started_at       timestamptz NOT NULL,
    latency_ms       int         NOT NULL,
    status_code      int,
    -- The first KiB of the response body.
    response_excerpt text CHECK (octet_length(response_excerpt) <= 1024),
    error            text,
    PRIMARY KEY (delivery_id, attempt)
);
