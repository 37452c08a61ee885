-- Read models of the read-model-projections group (services/projections; docs/decisions/0009-read-models.md).
--
-- Every row is written by the events of one partition key only (invoice and payment events: the invoice id;
-- settlement and merchant events: the merchant id), so a row has one writer at a time and its events arrive in
-- the order they happened. Each row records the last event applied to it (last_event_id, last_event_at) and how
-- many were (version). proj_applied_events de-duplicates by event id in the same transaction as the writes, so a
-- redelivered or re-published event changes nothing. Money is numeric, never float.
--
-- The tables below form one set: `checkoutctl projections rebuild` recreates the set with
-- CREATE TABLE … (LIKE … INCLUDING ALL) in a scratch schema, replays the topic into it and swaps its contents in
-- in one transaction. Add a table to the set in services/projections/src/rebuild.rs too.

CREATE TABLE proj_applied_events (
    event_id   uuid        PRIMARY KEY,
    -- When the projection applied it (clock time inside the applying transaction): the end of the
    -- commit → read model latency. Not part of the read models' content (a rebuild sets it anew).
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE proj_invoices (
    invoice_id          uuid        PRIMARY KEY,
    merchant_id         uuid        NOT NULL,
    currency            text        NOT NULL,
    total_amount        numeric     NOT NULL CHECK (total_amount > 0),
    crypto_currency     text        NOT NULL,
    crypto_amount_due   numeric     NOT NULL CHECK (crypto_amount_due > 0),
    -- Received and not failed (PaymentDetected adds, PaymentFailed subtracts; InvoicePaid, InvoiceExpired and
    -- InvoiceCancelled state the platform's figure).
    amount_paid         numeric     NOT NULL DEFAULT 0,
    overpaid_amount     numeric     NOT NULL DEFAULT 0,
    late_payment        boolean     NOT NULL DEFAULT false,
    -- The payments InvoicePaid counted; the invoice is confirmed when all of them are.
    payment_ids         uuid[]      NOT NULL DEFAULT '{}',
    payments_detected   integer     NOT NULL DEFAULT 0,
    payments_confirmed  integer     NOT NULL DEFAULT 0,
    payments_failed     integer     NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    paid_at             timestamptz,
    confirmed_at        timestamptz,
    expired_at          timestamptz,
    cancelled_at        timestamptz,
    cancellation_reason text,
    -- The lifecycle, derived from the facts above so that it can never disagree with them.
    status              text        GENERATED ALWAYS AS (
        CASE
            WHEN cancelled_at IS NOT NULL THEN 'cancelled'
            WHEN confirmed_at IS NOT NULL THEN 'confirmed'
            WHEN paid_at IS NOT NULL THEN 'paid'
            WHEN expired_at IS NOT NULL THEN 'expired'
            WHEN amount_paid > 0 THEN 'partially_paid'
            ELSE 'new'
        END) STORED,
    version             integer     NOT NULL CHECK (version > 0),
    last_event_id       uuid        NOT NULL,
    last_event_at       timestamptz NOT NULL
);
CREATE INDEX proj_invoices_merchant ON proj_invoices (merchant_id, created_at);

CREATE TABLE proj_payments (
    payment_id             uuid        PRIMARY KEY,
    invoice_id             uuid        NOT NULL,
    merchant_id            uuid        NOT NULL,
    crypto_currency        text        NOT NULL,
    network                text        NOT NULL,
    transaction_hash       text        NOT NULL,
    amount                 numeric     NOT NULL CHECK (amount > 0),
    amount_due             numeric     NOT NULL,
    coverage               text        NOT NULL,
    late                   boolean     NOT NULL,
    required_confirmations integer     NOT NULL,
    confirmations          integer     NOT NULL DEFAULT 0,
    block_height           bigint,
    status                 text        NOT NULL
        CHECK (status IN ('detected', 'confirming', 'confirmed', 'failed')),
    detected_at            timestamptz NOT NULL,
    confirmed_at           timestamptz,
    failed_at              timestamptz,
    failure_reason         text,
    version                integer     NOT NULL CHECK (version > 0),
    last_event_id          uuid        NOT NULL,
    last_event_at          timestamptz NOT NULL
);
CREATE INDEX proj_payments_invoice ON proj_payments (invoice_id);

CREATE TABLE proj_merchants (
    merchant_id                  uuid        PRIMARY KEY,
    business_name                text        NOT NULL,
    status                       text        NOT NULL CHECK (status IN ('active', 'suspended')),
    default_currency             text        NOT NULL,
    settlement_currency          text        NOT NULL,
    fee_percentage               numeric     NOT NULL,
    accepted_crypto_currencies   text[]      NOT NULL,
    speed_policy                 text        NOT NULL,
    -- NULL until the merchant changes them: the platform defaults apply.
    invoice_expiry_minutes       integer,
    payment_tolerance_percentage numeric,
    created_at                   timestamptz NOT NULL,
    suspended_at                 timestamptz,
    suspension_reason            text,
    suspension_details           text,
    version                      integer     NOT NULL CHECK (version > 0),
    last_event_id                uuid        NOT NULL,
    last_event_at                timestamptz NOT NULL
);

CREATE TABLE proj_settlements (
    settlement_id       uuid        PRIMARY KEY,
    invoice_id          uuid        NOT NULL,
    merchant_id         uuid        NOT NULL,
    currency            text        NOT NULL,
    gross_amount        numeric     NOT NULL,
    platform_fee_amount numeric     NOT NULL,
    net_amount          numeric     NOT NULL,
    fee_percentage      numeric     NOT NULL,
    -- pending → completed; pending → retrying (failed, will retry) → completed; → failed (final).
    status              text        NOT NULL CHECK (status IN ('pending', 'retrying', 'completed', 'failed')),
    failures            integer     NOT NULL DEFAULT 0,
    failure_reason      text,
    failure_details     text,
    created_at          timestamptz NOT NULL,
    settled_at          timestamptz,
    failed_at           timestamptz,
    version             integer     NOT NULL CHECK (version > 0),
    last_event_id       uuid        NOT NULL,
    last_event_at       timestamptz NOT NULL,
    CHECK (platform_fee_amount + net_amount = gross_amount)
);
CREATE INDEX proj_settlements_invoice ON proj_settlements (invoice_id);
CREATE INDEX proj_settlements_merchant ON proj_settlements (merchant_id, created_at);

-- Per merchant and settlement currency: what is owed, paid out and failed, maintained from settlement events.
CREATE TABLE proj_merchant_balances (
    merchant_id           uuid        NOT NULL,
    currency              text        NOT NULL,
    -- Net of settlements pending or retrying.
    pending_net           numeric     NOT NULL DEFAULT 0,
    settled_gross         numeric     NOT NULL DEFAULT 0,
    settled_fees          numeric     NOT NULL DEFAULT 0,
    settled_net           numeric     NOT NULL DEFAULT 0,
    -- Net of settlements that failed for good (operations must act).
    failed_net            numeric     NOT NULL DEFAULT 0,
    settlements_completed integer     NOT NULL DEFAULT 0,
    version               integer     NOT NULL CHECK (version > 0),
    last_event_id         uuid        NOT NULL,
    last_event_at         timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, currency)
);

-- Every event about an invoice (its own, its payments', its settlement's), for `checkoutctl invoice show`.
CREATE TABLE proj_invoice_history (
    event_id     uuid        PRIMARY KEY,
    invoice_id   uuid        NOT NULL,
    event_type   text        NOT NULL,
    aggregate_id text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    actor        text        NOT NULL,
    data         jsonb       NOT NULL
);
CREATE INDEX proj_invoice_history_invoice ON proj_invoice_history (invoice_id, occurred_at, event_id);
