-- Appending to the audit log in one call (services/audit; docs/decisions/0010-audit-hash-chain.md).
--
-- audit_append serialises appenders with a transaction-scoped advisory lock — a FIFO queue — and only then
-- reads the chain head (each statement of the function sees what committed before it got the lock). The first
-- version locked the head row with SELECT … FOR UPDATE inside the appending statement: with many concurrent
-- appenders every append woke all waiters, and 16 concurrent appenders fell to ~200 appends/s.
--
-- The row is numbered after the head and hashed here, SHA-256(head hash ‖ tag ‖ length-prefixed number ‖ rest),
-- `rest` being the canonical encoding of the other columns computed by the service; the triggers of
-- …400_audit.sql still check the link and advance the head. Returns the row's number, or NULL when the event is
-- already in the log.

CREATE FUNCTION audit_append(
    p_event_id        uuid,
    p_event_type      text,
    p_event_version   integer,
    p_aggregate_type  text,
    p_aggregate_id    text,
    p_merchant_id     text,
    p_invoice_id      text,
    p_actor           text,
    p_ip_address      text,
    p_user_agent      text,
    p_request_id      text,
    p_source          text,
    p_correlation_id  text,
    p_causation_id    text,
    p_occurred_at     timestamptz,
    p_recorded_at     timestamptz,
    p_kafka_topic     text,
    p_kafka_partition integer,
    p_kafka_offset    bigint,
    p_event           text,
    p_tag             bytea,
    p_rest            bytea
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    head     audit_chain_head%ROWTYPE;
    next_seq bigint;
    seq_text text;
BEGIN
    -- 0x0061756469746c6f: "auditlo"; held until the caller's transaction ends.
    PERFORM pg_advisory_xact_lock(27432146867350639);
    IF EXISTS (SELECT 1 FROM audit_log WHERE event_id = p_event_id) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO head FROM audit_chain_head;
    next_seq := head.seq + 1;
    seq_text := next_seq::text;
    INSERT INTO audit_log (seq, event_id, event_type, event_version, aggregate_type, aggregate_id, merchant_id,
                           invoice_id, actor, ip_address, user_agent, request_id, source, correlation_id,
                           causation_id, occurred_at, recorded_at, kafka_topic, kafka_partition, kafka_offset,
                           event, prev_hash, hash)
    VALUES (next_seq, p_event_id, p_event_type, p_event_version, p_aggregate_type, p_aggregate_id, p_merchant_id,
            p_invoice_id, p_actor, p_ip_address, p_user_agent, p_request_id, p_source, p_correlation_id,
            p_causation_id, p_occurred_at, p_recorded_at, p_kafka_topic, p_kafka_partition, p_kafka_offset,
            p_event, head.hash,
            sha256(head.hash || p_tag || int4send(octet_length(seq_text)) || convert_to(seq_text, 'UTF8')
                   || p_rest));
    RETURN next_seq;
END
$$;
