-- The outbox carries records of every topic (crates/outbox, docs/decisions/0021-outbox-records-of-every-topic.md).
--
-- Domain events are about an aggregate with a UUID id, but other contracts are about other things: a
-- notification about its recipient, an integration event about its source system's object. aggregate_id becomes
-- text, holding the id in its wire form (`inv_…`, as the Kafka header `aggregate_id` does). Rows already in the
-- outbox get their aggregate's prefix (decision 0002), so old and new rows read alike. outbox_dropped was created
-- LIKE outbox and receives its rows positionally (checkoutctl outbox drop), so it changes the same way.

ALTER TABLE outbox
    ALTER COLUMN aggregate_id TYPE text USING
        CASE aggregate_type
            WHEN 'Invoice' THEN 'inv_'
            WHEN 'Payment' THEN 'pay_'
            WHEN 'Settlement' THEN 'set_'
            WHEN 'Merchant' THEN 'mer_'
            ELSE ''
        END || aggregate_id::text,
    ADD CONSTRAINT outbox_aggregate_id_not_empty CHECK (aggregate_id <> '');

ALTER TABLE outbox_dropped
    ALTER COLUMN aggregate_id TYPE text USING
        CASE aggregate_type
            WHEN 'Invoice' THEN 'inv_'
            WHEN 'Payment' THEN 'pay_'
            WHEN 'Settlement' THEN 'set_'
            WHEN 'Merchant' THEN 'mer_'
            ELSE ''
        END || aggregate_id::text;
