-- Appending a whole batch to the audit log in one call (services/audit; docs/decisions/0010-audit-hash-chain.md).
--
-- audit_append_batch takes the same appenders' lock as audit_append (…600_audit_append.sql: a transaction-scoped
-- advisory lock, a FIFO queue) once for the batch, then, for each input row in order: skips it when its event id
-- is already logged or repeated earlier in the batch, else numbers it after the head and hashes it exactly as
-- audit_append does — SHA-256(previous hash ‖ tag ‖ length-prefixed number ‖ rest), `rest` being the canonical
-- encoding of the other columns computed by the service — and inserts it. Each row is its own INSERT, so the
-- triggers of …400_audit.sql still check every link and advance the head row by row. The chain format is
-- unchanged: a row appended here or by audit_append verifies alike.
--
-- The arguments are parallel arrays, one element per input row (p_tag is shared). Returns, per input row, its
-- number in the log, or NULL when it was a duplicate.

CREATE FUNCTION audit_append_batch(
    p_event_id        uuid[],
    p_event_type      text[],
    p_event_version   integer[],
    p_aggregate_type  text[],
    p_aggregate_id    text[],
    p_merchant_id     text[],
    p_invoice_id      text[],
    p_actor           text[],
    p_ip_address      text[],
    p_user_agent      text[],
    p_request_id      text[],
    p_source          text[],
    p_correlation_id  text[],
    p_causation_id    text[],
    p_occurred_at     timestamptz[],
    p_recorded_at     timestamptz[],
    p_kafka_topic     text[],
    p_kafka_partition integer[],
    p_kafka_offset    bigint[],
    p_event           text[],
    p_tag             bytea,
    p_rest            bytea[]
) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    n        integer := coalesce(cardinality(p_event_id), 0);
    head     audit_chain_head%ROWTYPE;
    todo     integer[];
    result   bigint[];
    i        integer;
    prev     bytea;
    next_seq bigint;
    seq_text text;
    row_hash bytea;
BEGIN
    IF cardinality(p_event_type) IS DISTINCT FROM n OR cardinality(p_event_version) IS DISTINCT FROM n
       OR cardinality(p_aggregate_type) IS DISTINCT FROM n OR cardinality(p_aggregate_id) IS DISTINCT FROM n
       OR cardinality(p_merchant_id) IS DISTINCT FROM n OR cardinality(p_invoice_id) IS DISTINCT FROM n
       OR cardinality(p_actor) IS DISTINCT FROM n OR cardinality(p_ip_address) IS DISTINCT FROM n
       OR cardinality(p_user_agent) IS DISTINCT FROM n OR cardinality(p_request_id) IS DISTINCT FROM n
       OR cardinality(p_source) IS DISTINCT FROM n OR cardinality(p_correlation_id) IS DISTINCT FROM n
       OR cardinality(p_causation_id) IS DISTINCT FROM n OR cardinality(p_occurred_at) IS DISTINCT FROM n
       OR cardinality(p_recorded_at) IS DISTINCT FROM n OR cardinality(p_kafka_topic) IS DISTINCT FROM n
       OR cardinality(p_kafka_partition) IS DISTINCT FROM n OR cardinality(p_kafka_offset) IS DISTINCT FROM n
       OR cardinality(p_event) IS DISTINCT FROM n OR cardinality(p_rest) IS DISTINCT FROM n THEN
        RAISE EXCEPTION 'audit_append_batch: the argument arrays must all have % elements', n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    result := array_fill(NULL::bigint, ARRAY[n]);
    IF n = 0 THEN
        RETURN result;
    END IF;
    -- The same lock as audit_append: 0x0061756469746c6f, "auditlo"; held until the caller's transaction ends.
    PERFORM pg_advisory_xact_lock(27432146867350639);
    -- The rows to append, in input order: the first occurrence of each event id not logged yet. (A new statement
    -- after the lock: it sees every append committed before.)
    SELECT coalesce(array_agg(f.i ORDER BY f.i), '{}') INTO todo
    FROM (SELECT DISTINCT ON (u.id) u.id, u.i::integer AS i
          FROM unnest(p_event_id) WITH ORDINALITY AS u(id, i)
          ORDER BY u.id, u.i) AS f
    WHERE NOT EXISTS (SELECT 1 FROM audit_log l WHERE l.event_id = f.id);
    IF cardinality(todo) = 0 THEN
        RETURN result;
    END IF;
    SELECT * INTO head FROM audit_chain_head;
    prev := head.hash;
    next_seq := head.seq;
    FOREACH i IN ARRAY todo LOOP
        next_seq := next_seq + 1;
        seq_text := next_seq::text;
        row_hash := sha256(prev || p_tag || int4send(octet_length(seq_text)) || convert_to(seq_text, 'UTF8')
                           || p_rest[i]);
        INSERT INTO audit_log (seq, event_id, event_type, event_version, aggregate_type, aggregate_id,
                               merchant_id, invoice_id, actor, ip_address, user_agent, request_id, source,
                               correlation_id, causation_id, occurred_at, recorded_at, kafka_topic,
                               kafka_partition, kafka_offset, event, prev_hash, hash)
        VALUES (next_seq, p_event_id[i], p_event_type[i], p_event_version[i], p_aggregate_type[i],
                p_aggregate_id[i], p_merchant_id[i], p_invoice_id[i], p_actor[i], p_ip_address[i],
                p_user_agent[i], p_request_id[i], p_source[i], p_correlation_id[i], p_causation_id[i],
                p_occurred_at[i], p_recorded_at[i], p_kafka_topic[i], p_kafka_partition[i], p_kafka_offset[i],
                p_event[i], prev, row_hash);
        result[i] := next_seq;
        prev := row_hash;
    END LOOP;
    RETURN result;
END
$$;
