-- Daily aggregates of the analytics-aggregation group (services/analytics; docs/decisions/0011-analytics.md).
--
-- Exactly-once (runtime mode b): every write below commits in the same transaction as the consumer's offset,
-- and events are de-duplicated by id (processed_events) in that transaction too, so a re-published event is not
-- counted twice. Counters are sharded by the Kafka partition that produced them (topic, partition): one partition
-- is processed by one lane, so each row has a single writer and the lanes never wait on each other's row locks.
-- Readers sum over the shards (analytics_merchant_daily, analytics_merchant_daily_money).
--
-- Days are UTC days of the event's own time (the envelope's timestamp; occurred_at for analytics events).

-- What the aggregates need to remember about an invoice (written by its own partition's lane).
CREATE TABLE analytics_invoices (
    invoice_id   uuid        PRIMARY KEY,
    merchant_id  uuid        NOT NULL,
    created_at   timestamptz NOT NULL,
    currency     text        NOT NULL,
    total_amount numeric     NOT NULL,
    -- The first InvoicePaid's time: the invoice converted.
    paid_at      timestamptz
);

CREATE TABLE analytics_daily (
    merchant_id        uuid    NOT NULL,
    day                date    NOT NULL,
    topic              text    NOT NULL,
    partition          integer NOT NULL,
    invoices_created   bigint  NOT NULL DEFAULT 0,
    invoices_paid      bigint  NOT NULL DEFAULT 0,
    invoices_expired   bigint  NOT NULL DEFAULT 0,
    invoices_cancelled bigint  NOT NULL DEFAULT 0,
    -- Invoices created on this day that have been paid since (the conversion cohort of the day).
    invoices_converted bigint  NOT NULL DEFAULT 0,
    checkout_views     bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, day, topic, partition)
);

CREATE TABLE analytics_daily_money (
    merchant_id  uuid    NOT NULL,
    day          date    NOT NULL,
    currency     text    NOT NULL,
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    -- Total amount of the invoices paid on this day, in the invoice's currency.
    gross_volume numeric NOT NULL DEFAULT 0,
    -- Fees and net of the settlements completed on this day, in the settlement's currency.
    fees         numeric NOT NULL DEFAULT 0,
    net_settled  numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, day, currency, topic, partition)
);

-- One sample per confirmed payment: milliseconds from its invoice's creation to the confirmation, on the
-- confirmation's day. Median and p95 are computed by nearest rank when read.
CREATE TABLE analytics_confirmation_times (
    payment_id  uuid    PRIMARY KEY,
    invoice_id  uuid    NOT NULL,
    merchant_id uuid    NOT NULL,
    day         date    NOT NULL,
    millis      bigint  NOT NULL CHECK (millis >= 0)
);
CREATE INDEX analytics_confirmation_times_day ON analytics_confirmation_times (merchant_id, day, millis);

CREATE VIEW analytics_merchant_daily AS
SELECT merchant_id, day,
       sum(invoices_created)::bigint   AS invoices_created,
       sum(invoices_paid)::bigint      AS invoices_paid,
       sum(invoices_expired)::bigint   AS invoices_expired,
       sum(invoices_cancelled)::bigint AS invoices_cancelled,
       sum(invoices_converted)::bigint AS invoices_converted,
       sum(checkout_views)::bigint     AS checkout_views
FROM analytics_daily
GROUP BY merchant_id, day;

CREATE VIEW analytics_merchant_daily_money AS
SELECT merchant_id, day, currency,
       sum(gross_volume) AS gross_volume,
       sum(fees)         AS fees,
       sum(net_settled)  AS net_settled
FROM analytics_daily_money
GROUP BY merchant_id, day, currency;
