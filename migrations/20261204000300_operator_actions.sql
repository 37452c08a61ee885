-- Operator actions (checkoutctl; first: `groups reset-offsets`, services/checkoutctl/src/groups_reset.rs): who did
-- what to which subject, when, with its details (the plan). Append-only by convention: nothing updates or deletes
-- rows. The hash-chained audit_log stays fed by the audit service from domain events alone.
CREATE TABLE operator_actions (
    id       bigserial   PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text        NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    action   text        NOT NULL,
    subject  text        NOT NULL,
    details  jsonb       NOT NULL
);
CREATE INDEX operator_actions_subject ON operator_actions (subject, at);
