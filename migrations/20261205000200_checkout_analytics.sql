-- The checkout page's other records in the daily aggregates (issue 14; decision 0011, amended): payment methods
-- chosen per asset and network, and checkouts abandoned by reason. Same rules as checkout_views: the UTC day of
-- the record's occurred_at, counters sharded by the source (topic, partition) so each row has one writer, readers
-- sum over the shards.

ALTER TABLE analytics_daily
    -- The customer left the checkout page before paying.
    ADD COLUMN checkouts_abandoned_left    bigint NOT NULL DEFAULT 0,
    -- The invoice expired while its checkout page was open.
    ADD COLUMN checkouts_abandoned_expired bigint NOT NULL DEFAULT 0;

CREATE TABLE analytics_daily_methods (
    merchant_id     uuid    NOT NULL,
    day             date    NOT NULL,
    -- The asset code (USDT) and network name (tron) chosen.
    crypto_currency text    NOT NULL,
    network         text    NOT NULL,
    topic           text    NOT NULL,
    partition       integer NOT NULL,
    choices         bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, day, crypto_currency, network, topic, partition)
);

-- Columns appended at the end, so CREATE OR REPLACE keeps the view's existing columns as they were.
CREATE OR REPLACE VIEW analytics_merchant_daily AS
SELECT merchant_id, day,
       sum(invoices_created)::bigint            AS invoices_created,
       sum(invoices_paid)::bigint               AS invoices_paid,
       sum(invoices_expired)::bigint            AS invoices_expired,
       sum(invoices_cancelled)::bigint          AS invoices_cancelled,
       sum(invoices_converted)::bigint          AS invoices_converted,
       sum(checkout_views)::bigint              AS checkout_views,
       sum(checkouts_abandoned_left)::bigint    AS checkouts_abandoned_left,
       sum(checkouts_abandoned_expired)::bigint AS checkouts_abandoned_expired
FROM analytics_daily
GROUP BY merchant_id, day;

CREATE VIEW analytics_merchant_daily_methods AS
SELECT merchant_id, day, crypto_currency, network, sum(choices)::bigint AS choices
FROM analytics_daily_methods
GROUP BY merchant_id, day, crypto_currency, network;
