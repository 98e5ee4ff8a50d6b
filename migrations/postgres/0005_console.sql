-- The web console (docs/console.md).
-- - `console_sessions`: a browser's session. Its cookie holds a random 256-bit id; only the
--   id's SHA-256 is stored, so that every instance on one database accepts the session and a
--   copy of the database opens none. A session belongs to the admin token it was opened with,
--   by the token's hash (a new token given the old name does not inherit it), and ends with
--   it: revoking the token deletes its sessions.
-- - `orders_created`: the overview sums the last 30 days of orders by the day they were placed.
CREATE TABLE console_sessions (
    id_hash    BYTEA   PRIMARY KEY CHECK (octet_length(id_hash) = 32),
    token_hash BYTEA   NOT NULL REFERENCES admin_tokens (token_hash) ON DELETE CASCADE,
    created_at BIGINT  NOT NULL,
    seen_at    BIGINT  NOT NULL
);

CREATE INDEX console_sessions_token ON console_sessions (token_hash);

CREATE INDEX orders_created ON orders (created_at);
