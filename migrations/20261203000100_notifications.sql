-- Notifications (services/notifications; docs/decisions/0031-notifications.md).
--
-- At-least-once, idempotent by notification id: the notification-delivery consumer records, per partition batch,
-- one row per NotificationRequested (the notification id is the key: a redelivered or replayed request adds
-- nothing) before its offsets are committed. One dispatcher loop per channel sends pending rows under a lease;
-- a row the provider accepted is `sent` and is never sent again.

-- Contact details on file per recipient (merchant `mer_…` or a customer reference), used when a request carries
-- no destination. The webhook channel's signing secret is encrypted like merchant webhook secrets
-- (AES-256-GCM under WEBHOOK_ENCRYPTION_KEY, bound to recipient_key).
CREATE TABLE notification_contacts (
    recipient_id          text        PRIMARY KEY CHECK (length(recipient_id) BETWEEN 1 AND 128),
    -- UUID v5 of the recipient id: the associated data of the sealed secret.
    recipient_key         uuid        NOT NULL,
    email                 text,
    phone                 text,
    webhook_url           text,
    webhook_secret_sealed bytea,
    locale                text,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CHECK ((webhook_url IS NULL) = (webhook_secret_sealed IS NULL))
);

CREATE TABLE notification_deliveries (
    notification_id  uuid        PRIMARY KEY,
    recipient_kind   text        NOT NULL CHECK (recipient_kind IN ('merchant', 'customer')),
    recipient_id     text        NOT NULL,
    channel          text        NOT NULL CHECK (channel IN ('email', 'sms', 'webhook')),
    template         text        NOT NULL,
    locale           text        NOT NULL,
    -- As requested; NULL: the recipient's contact, looked up at each attempt.
    destination      text,
    requested_at     timestamptz NOT NULL,
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    -- Attempts that reached the provider (or failed on our side); a channel outage does not count.
    attempts         int         NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    lease_token      uuid,
    first_failure_at timestamptz,
    last_failure_at  timestamptz,
    -- `permanent` (4xx, bad template or destination), `transient` (5xx, timeouts: the retries ran out).
    failure_class    text,
    last_error       text,
    -- Where it went and the provider's id: the Message-ID, the SMS sid, the webhook-id.
    sent_to          text,
    provider_id      text,
    -- SMS: 160-character (GSM-7) or 70-character (UCS-2) segments; single-part limits.
    segments         int,
    sent_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- The original record, for the dead letter.
    source_topic     text        NOT NULL,
    source_partition int         NOT NULL,
    source_offset    bigint      NOT NULL,
    source_timestamp bigint,
    record_key       bytea,
    record_value     bytea       NOT NULL,
    -- [[name, value or null], …] in the record's order (values as UTF-8 text).
    record_headers   jsonb       NOT NULL,
    CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (channel, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX notification_deliveries_recipient ON notification_deliveries (recipient_id, created_at);
