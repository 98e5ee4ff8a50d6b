-- panelgate on PostgreSQL: the schema of migrations/sqlite, in PostgreSQL's terms, for many
-- instances sharing one database.
--
-- Money columns are BIGINT counts of 0.00001 of the gateway's currency (crate::money). The
-- store binds only i64 to them; NUMERIC and floating-point columns are not used anywhere.
--
-- Ids are identities drawn from sequences, which never hand out a value twice (not even after
-- a rolled-back insert), so an order or refill id given to a customer is never reused.
--
-- Times are BIGINT Unix milliseconds, as the code passes them (the store never asks the
-- database for the time: every instance uses the `now` it was given).

CREATE TABLE customers (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT    NOT NULL,
    key_hash     BYTEA   NOT NULL,
    grp          TEXT    NOT NULL,
    credit_limit BIGINT  NOT NULL DEFAULT 0,
    balance      BIGINT  NOT NULL DEFAULT 0,
    enabled      BOOLEAN NOT NULL DEFAULT TRUE,
    created_at   BIGINT  NOT NULL,
    CONSTRAINT customers_name_unique UNIQUE (name),
    CONSTRAINT customers_key_hash_unique UNIQUE (key_hash),
    CONSTRAINT customers_key_hash_length CHECK (octet_length(key_hash) = 32),
    CONSTRAINT customers_credit_limit_not_negative CHECK (credit_limit >= 0),
    -- The floor, as a last line of defence behind the guarded updates in the code.
    CONSTRAINT customers_balance_floor CHECK (balance >= -credit_limit)
);

CREATE TABLE orders (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id      BIGINT NOT NULL REFERENCES customers (id),
    service          BIGINT NOT NULL CHECK (service >= 0),
    upstream         TEXT   NOT NULL,
    upstream_service BIGINT NOT NULL CHECK (upstream_service >= 0),
    upstream_order   BIGINT CHECK (upstream_order >= 0),
    state            TEXT   NOT NULL
        CONSTRAINT orders_state_known
        CHECK (state IN ('dispatching', 'placed', 'rejected', 'unknown', 'final')),
    status           TEXT   NOT NULL,
    charge           BIGINT NOT NULL CHECK (charge >= 0),
    refunded         BIGINT NOT NULL DEFAULT 0,
    billed           BIGINT NOT NULL CHECK (billed >= 0),
    remains          BIGINT,
    start_count      BIGINT CHECK (start_count >= 0),
    cost             BIGINT,
    link             TEXT,
    fields           TEXT   NOT NULL,
    note             TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    synced_at        BIGINT,
    -- Sync work is claimed in leased batches: a row whose lease has not expired is left to
    -- the instance that holds it.
    lease_until      BIGINT,
    -- A customer is never refunded more than they paid.
    CONSTRAINT orders_refund_within_charge CHECK (refunded >= 0 AND refunded <= charge),
    -- Sync follows a placed order by its upstream id.
    CONSTRAINT orders_placed_has_upstream_order
        CHECK (state <> 'placed' OR upstream_order IS NOT NULL)
);
CREATE INDEX orders_customer ON orders (customer_id, id);
-- Listing by state (newest first), counting by state, recovering stale dispatches.
CREATE INDEX orders_state ON orders (state, id);
-- The sync claim: placed orders of one upstream, least recently synced (never first).
CREATE INDEX orders_sync ON orders (upstream, synced_at NULLS FIRST, id) WHERE state = 'placed';

-- Append-only (the triggers below refuse UPDATE, DELETE and TRUNCATE). A customer's balance
-- is the sum of their entries. A charge, release or refund is written at most once per order.
CREATE TABLE ledger (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    amount      BIGINT NOT NULL,
    kind        TEXT   NOT NULL
        CONSTRAINT ledger_kind_known
        CHECK (kind IN ('credit', 'debit', 'charge', 'release', 'refund')),
    order_id    BIGINT REFERENCES orders (id),
    note        TEXT,
    created_at  BIGINT NOT NULL,
    -- Signs: money in is positive, money out negative.
    CONSTRAINT ledger_sign_per_kind
        CHECK ((kind IN ('credit', 'release', 'refund') AND amount >= 0)
            OR (kind IN ('debit', 'charge') AND amount <= 0)),
    -- Order entries name their order; operator entries name none.
    CONSTRAINT ledger_order_per_kind
        CHECK ((order_id IS NULL) = (kind IN ('credit', 'debit')))
);
CREATE INDEX ledger_customer ON ledger (customer_id, id);
CREATE UNIQUE INDEX ledger_once_per_order ON ledger (order_id, kind) WHERE order_id IS NOT NULL;

CREATE FUNCTION ledger_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only' USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

CREATE TABLE refills (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id        BIGINT NOT NULL REFERENCES orders (id),
    customer_id     BIGINT NOT NULL REFERENCES customers (id),
    upstream        TEXT   NOT NULL,
    upstream_refill BIGINT NOT NULL CHECK (upstream_refill >= 0),
    status          TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    synced_at       BIGINT,
    lease_until     BIGINT
);
CREATE INDEX refills_customer ON refills (customer_id, id);
-- The sync claim: unfinished refills of one upstream (the statuses the store matches, as
-- literals, so that the planner can use this partial index with any plan).
CREATE INDEX refills_sync ON refills (upstream, synced_at NULLS FIRST, id)
    WHERE status IN ('Pending', 'In progress');
