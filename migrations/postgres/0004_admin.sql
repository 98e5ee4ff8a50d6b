-- The admin API (docs/admin-api.md).
-- - `admin_tokens`: bearer tokens by name, stored as their SHA-256 only, so that every instance
--   on one database accepts them; revoking deletes the row.
-- - `audit`: every write through the admin API or the CLI: who, when, what, the outcome. Never
--   a key or a token.
-- - `idempotency`: a credit or debit sent with an `Idempotency-Key`, written in the transaction
--   of its ledger entry, so that a retried request is applied once and answered the same.
CREATE TABLE admin_tokens (
    name       TEXT    PRIMARY KEY,
    token_hash BYTEA   NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    role       TEXT    NOT NULL CHECK (role IN ('read', 'write')),
    created_at BIGINT  NOT NULL
);

CREATE TABLE audit (
    id      BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT  NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    outcome TEXT    NOT NULL
);

CREATE TABLE idempotency (
    scope        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash BYTEA   NOT NULL CHECK (octet_length(request_hash) = 32),
    balance      BIGINT,
    created_at   BIGINT  NOT NULL,
    PRIMARY KEY (scope, key)
);
