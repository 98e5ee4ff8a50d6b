-- The admin API (docs/admin-api.md).
-- - `admin_tokens`: bearer tokens by name, stored as their SHA-256 only, so that every instance
--   on one database accepts them; revoking deletes the row.
-- - `audit`: every write through the admin API or the CLI: who, when, what, the outcome. Never
--   a key or a token.
-- - `idempotency`: a credit or debit sent with an `Idempotency-Key`, written in the transaction
--   of its ledger entry, so that a retried request is applied once and answered the same.
CREATE TABLE admin_tokens (
    name       TEXT    PRIMARY KEY,
    token_hash BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    role       TEXT    NOT NULL CHECK (role IN ('read', 'write')),
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    outcome TEXT    NOT NULL
) STRICT;

CREATE TABLE idempotency (
    scope        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash BLOB    NOT NULL CHECK (length(request_hash) = 32),
    balance      INTEGER,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) STRICT;
