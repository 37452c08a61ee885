-- Appending a whole batch to the audit log in one call (services/audit; docs/decisions/0010-audit-hash-chain.md).
--
-- audit_append_batch takes the same appenders' lock as audit_append (…600_audit_append.sql: a transaction-scoped
-- advisory lock, a FIFO queue) once for the batch, picks the input rows whose event id is neither logged nor
-- repeated earlier in the batch, numbers them after the head and hashes them in order exactly as audit_append
-- does — SHA-256(previous hash ‖ tag ‖ length-prefixed number ‖ rest), `rest` being the canonical encoding of the
-- other columns computed by the service — and inserts them with ONE multi-row INSERT. The chain format is
-- unchanged: a row appended here or by audit_append verifies alike.
--
-- The chain is now checked per statement instead of per row: the row triggers of …400_audit.sql (check each row
-- against the head, advance the head after each row) cost two head accesses per row under the appenders' lock,
-- about half of the append time. A statement-level trigger with the inserted rows as a transition table checks
-- that they continue the chain from the head — numbers head+1, head+2, … without gaps, each prev_hash the hash
-- before it, the first one the head's — and advances the head once to the last of them. What the database
-- enforces is the same: rows can only extend the chain at its head, and the head only moves with them.
--
-- The arguments are parallel arrays, one element per input row (p_tag is shared). Returns, per input row, its
-- number in the log, or NULL when it was a duplicate.

DROP TRIGGER audit_log_append_at_head ON audit_log;
DROP TRIGGER audit_log_advance_head ON audit_log;

CREATE FUNCTION audit_log_extend_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head   audit_chain_head%ROWTYPE;
    broken bigint;
    rows_n bigint;
    last   audit_log%ROWTYPE;
BEGIN
    SELECT * INTO head FROM audit_chain_head FOR UPDATE;
    SELECT count(*),
           count(*) FILTER (WHERE seq <> head.seq + n OR prev_hash <> coalesce(before, head.hash))
      INTO rows_n, broken
      FROM (SELECT seq, prev_hash, row_number() OVER (ORDER BY seq) AS n,
                   lag(hash) OVER (ORDER BY seq) AS before
              FROM appended) AS r;
    IF rows_n = 0 THEN
        RETURN NULL;
    END IF;
    IF broken > 0 THEN
        RAISE EXCEPTION 'audit_log insert does not extend the chain head (seq %): % of % rows out of place',
            head.seq, broken, rows_n
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    SELECT * INTO last FROM appended ORDER BY seq DESC LIMIT 1;
    UPDATE audit_chain_head SET seq = last.seq, hash = last.hash;
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_log_extend_chain AFTER INSERT ON audit_log
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_extend_chain();

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
    seqs     bigint[];
    prevs    bytea[];
    hashes   bytea[];
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
    seqs := '{}';
    prevs := '{}';
    hashes := '{}';
    FOREACH i IN ARRAY todo LOOP
        next_seq := next_seq + 1;
        seq_text := next_seq::text;
        row_hash := sha256(prev || p_tag || int4send(octet_length(seq_text)) || convert_to(seq_text, 'UTF8')
                           || p_rest[i]);
        seqs := seqs || next_seq;
        prevs := prevs || prev;
        hashes := hashes || row_hash;
        result[i] := next_seq;
        prev := row_hash;
    END LOOP;
    INSERT INTO audit_log (seq, event_id, event_type, event_version, aggregate_type, aggregate_id, merchant_id,
                           invoice_id, actor, ip_address, user_agent, request_id, source, correlation_id,
                           causation_id, occurred_at, recorded_at, kafka_topic, kafka_partition, kafka_offset,
                           event, prev_hash, hash)
    SELECT s.seq, p_event_id[t.i], p_event_type[t.i], p_event_version[t.i], p_aggregate_type[t.i],
           p_aggregate_id[t.i], p_merchant_id[t.i], p_invoice_id[t.i], p_actor[t.i], p_ip_address[t.i],
           p_user_agent[t.i], p_request_id[t.i], p_source[t.i], p_correlation_id[t.i], p_causation_id[t.i],
           p_occurred_at[t.i], p_recorded_at[t.i], p_kafka_topic[t.i], p_kafka_partition[t.i], p_kafka_offset[t.i],
           p_event[t.i], s.prev, s.hash
      FROM unnest(todo) WITH ORDINALITY AS t(i, k)
      JOIN unnest(seqs, prevs, hashes) WITH ORDINALITY AS s(seq, prev, hash, k) USING (k)
     ORDER BY k;
    RETURN result;
END
$$;
