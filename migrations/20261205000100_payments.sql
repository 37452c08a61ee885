-- The payment-ingestion group (services/payments; docs/decisions/0034-payment-ingestion.md).
--
-- Exactly-once (runtime mode b): these rows, the payment and invoice events the service emits (appended to
-- `outbox` in the same transaction) and the consumer's position commit together. Money is numeric, never float.

-- What payments needs of an invoice (from InvoiceCreated v2 and InvoiceCancelled on domain-events): where it is
-- paid, what and how much is due, how many confirmations a payment needs, and whether its InvoicePaid was emitted.
CREATE TABLE pay_invoices (
    invoice_id             uuid        PRIMARY KEY,
    merchant_id            uuid        NOT NULL,
    network                text        NOT NULL,
    -- The deposit address in matching form (EVM hex and bech32 lower-cased).
    address                text        NOT NULL,
    crypto_currency        text        NOT NULL,
    crypto_amount          numeric     NOT NULL CHECK (crypto_amount > 0),
    required_confirmations integer     NOT NULL CHECK (required_confirmations >= 0),
    expires_at             timestamptz NOT NULL,
    correlation_id         uuid,
    cancelled_at           timestamptz,
    paid_event_id          uuid,
    UNIQUE (network, address)
);

-- One row per chain output paying an invoice's address: its payment id (derived from network, hash and index),
-- what it transfers, when it was first detected (NULL: dropped before it was ever seen), the highest confirmation
-- count announced, and when it was confirmed or failed. Only moves forward.
CREATE TABLE pay_outputs (
    payment_id       uuid        PRIMARY KEY,
    invoice_id       uuid        NOT NULL REFERENCES pay_invoices (invoice_id),
    network          text        NOT NULL,
    transaction_hash text        NOT NULL,
    output_index     integer     NOT NULL CHECK (output_index >= 0),
    amount           numeric     NOT NULL CHECK (amount > 0),
    detected_at      timestamptz,
    late             boolean     NOT NULL DEFAULT false,
    confirmations    integer     NOT NULL DEFAULT 0 CHECK (confirmations >= 0),
    block_height     bigint,
    confirmed_at     timestamptz,
    failed_at        timestamptz,
    UNIQUE (network, transaction_hash, output_index)
);
CREATE INDEX pay_outputs_invoice ON pay_outputs (invoice_id);
