-- The tamper-evident audit log of the audit-logging group (services/audit; docs/decisions/0010-audit-hash-chain.md).
--
-- One row per domain event (duplicates ignored by event id), numbered 1, 2, 3, … without gaps. Row n carries
-- prev_hash = hash of row n-1 (32 zero bytes for row 1) and hash = SHA-256(prev_hash ‖ canonical row n), the
-- canonical encoding being defined in services/audit/src/chain.rs. Deleting, modifying or reordering any row
-- breaks the chain at that row; `checkoutctl audit verify` recomputes it and names the first broken row.
--
-- The database enforces what it can on its own: rows cannot be updated, deleted or truncated; a row can only
-- be appended as the successor of the chain head (seq = head + 1, prev_hash = head hash), and the head only
-- advances through that append. Only a superuser who disables triggers can change history — and the hashes
-- then no longer match.

CREATE TABLE audit_log (
    seq             bigint      PRIMARY KEY CHECK (seq > 0),
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    event_version   integer     NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    merchant_id     text        NOT NULL,
    invoice_id      text,
    -- From the event's metadata: who, from where, with what, in which request.
    actor           text        NOT NULL,
    ip_address      text,
    user_agent      text,
    request_id      text,
    source          text,
    correlation_id  text,
    causation_id    text,
    -- The event's own time, and when it was logged (both whole microseconds).
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    -- Where it was read from.
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    -- The event exactly as consumed.
    event           text        NOT NULL,
    prev_hash       bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash            bytea       NOT NULL UNIQUE CHECK (octet_length(hash) = 32)
);
CREATE INDEX audit_log_merchant ON audit_log (merchant_id, occurred_at);
CREATE INDEX audit_log_invoice ON audit_log (invoice_id) WHERE invoice_id IS NOT NULL;

-- The chain head: the last row's number and hash. One row; appenders lock it, which orders appends.
CREATE TABLE audit_chain_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq       bigint  NOT NULL CHECK (seq >= 0),
    hash      bytea   NOT NULL CHECK (octet_length(hash) = 32)
);
INSERT INTO audit_chain_head (seq, hash) VALUES (0, decode(repeat('00', 32), 'hex'));

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_chain_head_no_delete BEFORE DELETE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON audit_chain_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- An appended row must extend the chain at its head.
CREATE FUNCTION audit_log_check_append() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head audit_chain_head%ROWTYPE;
BEGIN
    SELECT * INTO head FROM audit_chain_head FOR UPDATE;
    IF NEW.seq <> head.seq + 1 OR NEW.prev_hash <> head.hash THEN
        RAISE EXCEPTION 'audit_log row % does not extend the chain head (seq %)', NEW.seq, head.seq
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_log_append_at_head BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_check_append();

-- The head advances with each appended row, and only that way.
CREATE FUNCTION audit_log_advance_head() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE audit_chain_head SET seq = NEW.seq, hash = NEW.hash;
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_log_advance_head AFTER INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_advance_head();

CREATE FUNCTION audit_chain_head_check_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'audit_chain_head only advances when a row is appended to audit_log'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_chain_head_only_by_append BEFORE UPDATE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION audit_chain_head_check_update();

REVOKE UPDATE, DELETE, TRUNCATE ON audit_log, audit_chain_head FROM PUBLIC;
