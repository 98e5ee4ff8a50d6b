-- panelgate on SQLite. Money columns are INTEGER counts of 0.00001 of the gateway's currency
-- (crate::money); the tables are STRICT, so a value that is not an integer (an overflow turned
-- REAL, a float bound by mistake) is refused instead of stored.
--
-- Ids handed to customers (orders, refills) use AUTOINCREMENT so that an id is never reused,
-- even after a rolled-back insert of the highest one.

CREATE TABLE customers (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    key_hash     BLOB    NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    grp          TEXT    NOT NULL,
    credit_limit INTEGER NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    balance      INTEGER NOT NULL DEFAULT 0,
    enabled      INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at   INTEGER NOT NULL,
    -- The floor, as a last line of defence behind the guarded updates in the code.
    CHECK (balance >= -credit_limit)
) STRICT;

CREATE TABLE orders (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id      INTEGER NOT NULL REFERENCES customers (id),
    service          INTEGER NOT NULL CHECK (service >= 0),
    upstream         TEXT    NOT NULL,
    upstream_service INTEGER NOT NULL CHECK (upstream_service >= 0),
    upstream_order   INTEGER CHECK (upstream_order >= 0),
    state            TEXT    NOT NULL
        CHECK (state IN ('dispatching', 'placed', 'rejected', 'unknown', 'final')),
    status           TEXT    NOT NULL,
    charge           INTEGER NOT NULL CHECK (charge >= 0),
    refunded         INTEGER NOT NULL DEFAULT 0,
    billed           INTEGER NOT NULL CHECK (billed >= 0),
    remains          INTEGER,
    start_count      INTEGER CHECK (start_count >= 0),
    cost             INTEGER,
    link             TEXT,
    fields           TEXT    NOT NULL,
    note             TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    synced_at        INTEGER,
    -- A customer is never refunded more than they paid.
    CHECK (refunded >= 0 AND refunded <= charge),
    -- Sync follows a placed order by its upstream id.
    CHECK (state <> 'placed' OR upstream_order IS NOT NULL)
) STRICT;
CREATE INDEX orders_customer ON orders (customer_id, id);
CREATE INDEX orders_sync ON orders (state, upstream, synced_at);

-- Append-only (the triggers below refuse UPDATE and DELETE). A customer's balance is the sum
-- of their entries. A charge, release or refund is written at most once per order.
CREATE TABLE ledger (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    amount      INTEGER NOT NULL,
    kind        TEXT    NOT NULL
        CHECK (kind IN ('credit', 'debit', 'charge', 'release', 'refund')),
    order_id    INTEGER REFERENCES orders (id),
    note        TEXT,
    created_at  INTEGER NOT NULL,
    -- Signs: money in is positive, money out negative.
    CHECK ((kind IN ('credit', 'release', 'refund') AND amount >= 0)
        OR (kind IN ('debit', 'charge') AND amount <= 0)),
    -- Order entries name their order; operator entries name none.
    CHECK ((order_id IS NULL) = (kind IN ('credit', 'debit')))
) STRICT;
CREATE INDEX ledger_customer ON ledger (customer_id, id);
CREATE UNIQUE INDEX ledger_once_per_order ON ledger (order_id, kind) WHERE order_id IS NOT NULL;

CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only');
END;

CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only');
END;

CREATE TABLE refills (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id        INTEGER NOT NULL REFERENCES orders (id),
    customer_id     INTEGER NOT NULL REFERENCES customers (id),
    upstream        TEXT    NOT NULL,
    upstream_refill INTEGER NOT NULL CHECK (upstream_refill >= 0),
    status          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    synced_at       INTEGER
) STRICT;
CREATE INDEX refills_customer ON refills (customer_id, id);
CREATE INDEX refills_sync ON refills (status, upstream, synced_at);
