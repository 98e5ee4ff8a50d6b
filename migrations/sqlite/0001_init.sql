-- Money columns are INTEGER counts of 0.00001 of the gateway's currency.

CREATE TABLE customers (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    key_hash     BLOB    NOT NULL UNIQUE,
    grp          TEXT    NOT NULL,
    credit_limit INTEGER NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    balance      INTEGER NOT NULL DEFAULT 0,
    enabled      INTEGER NOT NULL DEFAULT 1,
    created_at   INTEGER NOT NULL,
    CHECK (balance >= -credit_limit)
);

CREATE TABLE orders (
    id               INTEGER PRIMARY KEY,
    customer_id      INTEGER NOT NULL REFERENCES customers(id),
    service          INTEGER NOT NULL,
    upstream         TEXT    NOT NULL,
    upstream_service INTEGER NOT NULL,
    upstream_order   INTEGER,
    state            TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    charge           INTEGER NOT NULL CHECK (charge >= 0),
    refunded         INTEGER NOT NULL DEFAULT 0,
    billed           INTEGER NOT NULL,
    remains          INTEGER,
    start_count      INTEGER,
    cost             INTEGER,
    link             TEXT,
    fields           TEXT    NOT NULL,
    note             TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    synced_at        INTEGER,
    CHECK (refunded >= 0 AND refunded <= charge)
);
CREATE INDEX orders_customer ON orders (customer_id, id);
CREATE INDEX orders_sync ON orders (state, upstream, synced_at);

-- Append-only. A charge, release or refund is written at most once per order.
CREATE TABLE ledger (
    id          INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    amount      INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    order_id    INTEGER REFERENCES orders(id),
    note        TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX ledger_customer ON ledger (customer_id, id);
CREATE UNIQUE INDEX ledger_once_per_order ON ledger (order_id, kind) WHERE order_id IS NOT NULL;

CREATE TABLE refills (
    id              INTEGER PRIMARY KEY,
    order_id        INTEGER NOT NULL REFERENCES orders(id),
    customer_id     INTEGER NOT NULL REFERENCES customers(id),
    upstream        TEXT    NOT NULL,
    upstream_refill INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    synced_at       INTEGER
);
CREATE INDEX refills_customer ON refills (customer_id, id);
CREATE INDEX refills_sync ON refills (upstream, status, synced_at);
