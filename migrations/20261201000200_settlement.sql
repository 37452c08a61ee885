-- The settlement-processing group (services/settlement; docs/decisions/0027-settlement.md).
--
-- Exactly-once (runtime mode b): every write below, the events the service emits (appended to `outbox` in the
-- same transaction) and the consumer's position commit together. What the service remembers of the events it
-- reads is kept in stl_* tables; what it decided is `settlements` and the double-entry `ledger_entries`.
-- Money is numeric, never float. Every row is written by the events of one partition key: invoice state by the
-- invoice's events, merchant state, suspensions and a settlement's completion by the merchant's events (the
-- settlement events are keyed by merchant).

-- What settlement needs of a merchant: its fee rate.
CREATE TABLE stl_merchants (
    merchant_id    uuid        PRIMARY KEY,
    fee_percentage numeric     NOT NULL CHECK (fee_percentage >= 0 AND fee_percentage <= 100),
    created_at     timestamptz NOT NULL
);

-- A merchant's suspensions, as intervals [suspended_at, reinstated_at) of event time: a settlement whose
-- conditions completed inside one is held until the reinstatement.
CREATE TABLE stl_suspensions (
    merchant_id   uuid        NOT NULL,
    suspended_at  timestamptz NOT NULL,
    reinstated_at timestamptz,
    PRIMARY KEY (merchant_id, suspended_at),
    CHECK (reinstated_at IS NULL OR reinstated_at >= suspended_at)
);

-- What settlement needs of an invoice: its amount and currency, whether (and when, by which event) it was paid,
-- the payments it counts, what was over-paid or received without paying it, and its settlement once decided.
CREATE TABLE stl_invoices (
    invoice_id        uuid        PRIMARY KEY,
    merchant_id       uuid        NOT NULL,
    currency          text        NOT NULL,
    total_amount      numeric     NOT NULL CHECK (total_amount > 0),
    crypto_currency   text        NOT NULL,
    correlation_id    uuid,
    created_at        timestamptz NOT NULL,
    paid_at           timestamptz,
    paid_event_id     uuid,
    counted_payments  uuid[]      NOT NULL DEFAULT '{}',
    overpaid_amount   numeric     NOT NULL DEFAULT 0 CHECK (overpaid_amount >= 0),
    late_payment      boolean     NOT NULL DEFAULT false,
    -- Expired or cancelled without being paid, and the crypto received anyway (owed back to the customer).
    closed_at         timestamptz,
    refund_amount     numeric     NOT NULL DEFAULT 0 CHECK (refund_amount >= 0),
    settlement_id     uuid
);
CREATE INDEX stl_invoices_merchant ON stl_invoices (merchant_id);

CREATE TABLE stl_payments (
    payment_id         uuid        PRIMARY KEY,
    invoice_id         uuid        NOT NULL,
    confirmed_at       timestamptz,
    confirmed_event_id uuid,
    failed_at          timestamptz
);
CREATE INDEX stl_payments_invoice ON stl_payments (invoice_id);

-- One settlement per invoice (the unique constraint is the last line of defence: the service checks first, and
-- the settlement id is derived from the invoice id). created_at is the event time that completed the conditions.
-- created → completed; created → held → completed (suspended merchant, reinstated).
CREATE TABLE settlements (
    settlement_id       uuid        PRIMARY KEY,
    invoice_id          uuid        NOT NULL UNIQUE,
    merchant_id         uuid        NOT NULL,
    currency            text        NOT NULL,
    gross_amount        numeric     NOT NULL CHECK (gross_amount > 0),
    platform_fee_amount numeric     NOT NULL CHECK (platform_fee_amount >= 0),
    net_amount          numeric     NOT NULL CHECK (net_amount >= 0),
    fee_percentage      numeric     NOT NULL,
    status              text        NOT NULL CHECK (status IN ('created', 'held', 'completed')),
    created_at          timestamptz NOT NULL,
    held_at             timestamptz,
    settled_at          timestamptz,
    causation_event_id  uuid        NOT NULL,
    correlation_id      uuid,
    recorded_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (platform_fee_amount + net_amount = gross_amount),
    CHECK ((status = 'completed') = (settled_at IS NOT NULL))
);
CREATE INDEX settlements_merchant ON settlements (merchant_id, status);

-- The double-entry ledger: every journal's lines sum to zero per currency, so the ledger balances to zero per
-- currency at all times. Accounts:
--   customer_receipts  funds received from customers (a contra account: negative = received);
--   merchant_payable   owed to a merchant, not paid out yet (pending and held settlements);
--   merchant_paid_out  paid out to a merchant;
--   platform_fees      the platform's fee revenue;
--   customer_refunds   owed back to customers (over-payments; crypto received for an invoice that expired or was
--                      cancelled unpaid — reversed if the invoice is then paid late, the funds counting toward it).
-- Journal ids are derived from what they record, so a journal can never be posted twice.
CREATE TABLE ledger_entries (
    entry_id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    journal_id    uuid        NOT NULL,
    line          smallint    NOT NULL CHECK (line > 0),
    kind          text        NOT NULL
        CHECK (kind IN ('settlement', 'payout', 'overpayment', 'refund_owed', 'refund_reversed')),
    account       text        NOT NULL
        CHECK (account IN ('customer_receipts', 'merchant_payable', 'merchant_paid_out', 'platform_fees',
                           'customer_refunds')),
    merchant_id   uuid,
    invoice_id    uuid        NOT NULL,
    settlement_id uuid,
    currency      text        NOT NULL,
    amount        numeric     NOT NULL CHECK (amount <> 0),
    posted_at     timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (journal_id, line),
    CHECK ((account IN ('merchant_payable', 'merchant_paid_out')) = (merchant_id IS NOT NULL))
);
CREATE INDEX ledger_entries_merchant ON ledger_entries (merchant_id, currency) WHERE merchant_id IS NOT NULL;
CREATE INDEX ledger_entries_settlement ON ledger_entries (settlement_id) WHERE settlement_id IS NOT NULL;

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER ledger_entries_no_update_or_delete BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Every journal inserted by a statement must balance per currency, and be complete in that statement.
CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced text;
BEGIN
    SELECT string_agg(format('%s %s: %s', journal_id, currency, total), ', ') INTO unbalanced
      FROM (SELECT journal_id, currency, sum(amount) AS total FROM posted
             GROUP BY journal_id, currency HAVING sum(amount) <> 0) AS j;
    IF unbalanced IS NOT NULL THEN
        RAISE EXCEPTION 'unbalanced ledger journal(s): %', unbalanced
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM ledger_entries e JOIN posted p USING (journal_id)
                WHERE e.entry_id NOT IN (SELECT entry_id FROM posted)) THEN
        RAISE EXCEPTION 'a ledger journal must be posted in one statement'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS posted
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_balanced();

REVOKE UPDATE, DELETE, TRUNCATE ON ledger_entries FROM PUBLIC;

-- Balances: per account (and merchant) and currency.
CREATE VIEW ledger_balances AS
SELECT account, merchant_id, currency, sum(amount) AS balance, count(*) AS entries
FROM ledger_entries
GROUP BY account, merchant_id, currency;

-- A merchant's money per currency, derived from the ledger: owed (pending and held) and paid out.
CREATE VIEW ledger_merchant_balances AS
SELECT merchant_id, currency,
       coalesce(sum(amount) FILTER (WHERE account = 'merchant_payable'), 0)  AS payable,
       coalesce(sum(amount) FILTER (WHERE account = 'merchant_paid_out'), 0) AS paid_out
FROM ledger_entries
WHERE merchant_id IS NOT NULL
GROUP BY merchant_id, currency;
