-- Orders learn what they need to settle on their own, whatever the config says later:
-- - upstream order ids are text: some panels answer opaque ids such as "ord_01HG…";
-- - `attention`: why a person must look at the order (unknown_outcome, refund_unknown,
--   partial_without_remains, stuck), or NULL;
-- - `list_cost`: the target's list price for the order in our currency at placement, and
--   `first_cost`: the first charge the upstream reported before the order was final; a
--   package's Partial refund is the share of these the upstream gave back;
-- - `can_refill` / `can_cancel`: the service's flags when the order was placed;
-- - `dispatch_deadline`: when the `add` running for it must have ended;
-- - `progress_at`: when the upstream last reported a change (stuck orders count from it).
--
-- SQLite cannot change a column's type, so the table is rebuilt (SQLite's own procedure):
-- the store runs migrations with foreign keys off and checks them afterwards
-- (`SqliteStore::open`), since the pragma cannot change inside the migration's transaction.
-- The uniqueness of (upstream, upstream_order) is not here: the store creates that index
-- after checking that no upstream order is held by two local orders (it names them if so).
CREATE TABLE orders_new (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id       INTEGER NOT NULL REFERENCES customers (id),
    service           INTEGER NOT NULL CHECK (service >= 0),
    upstream          TEXT    NOT NULL,
    upstream_service  INTEGER NOT NULL CHECK (upstream_service >= 0),
    upstream_order    TEXT    CHECK (upstream_order <> ''),
    state             TEXT    NOT NULL
        CHECK (state IN ('dispatching', 'placed', 'rejected', 'unknown', 'final')),
    status            TEXT    NOT NULL,
    charge            INTEGER NOT NULL CHECK (charge >= 0),
    refunded          INTEGER NOT NULL DEFAULT 0,
    billed            INTEGER NOT NULL CHECK (billed >= 0),
    remains           INTEGER,
    start_count       INTEGER CHECK (start_count >= 0),
    cost              INTEGER,
    link              TEXT,
    fields            TEXT    NOT NULL,
    note              TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    synced_at         INTEGER,
    lease_until       INTEGER,
    attention         TEXT
        CHECK (attention IN ('unknown_outcome', 'refund_unknown', 'partial_without_remains', 'stuck')),
    list_cost         INTEGER CHECK (list_cost >= 0),
    first_cost        INTEGER,
    can_refill        INTEGER CHECK (can_refill IN (0, 1)),
    can_cancel        INTEGER CHECK (can_cancel IN (0, 1)),
    dispatch_deadline INTEGER,
    progress_at       INTEGER,
    CHECK (refunded >= 0 AND refunded <= charge),
    CHECK (state <> 'placed' OR upstream_order IS NOT NULL)
) STRICT;

INSERT INTO orders_new (id, customer_id, service, upstream, upstream_service, upstream_order,
    state, status, charge, refunded, billed, remains, start_count, cost, link, fields, note,
    created_at, updated_at, synced_at, lease_until, attention)
SELECT id, customer_id, service, upstream, upstream_service, CAST(upstream_order AS TEXT),
    state, status, charge, refunded, billed, remains, start_count, cost, link, fields, note,
    created_at, updated_at, synced_at, lease_until,
    CASE WHEN state = 'unknown' THEN 'unknown_outcome' END
FROM orders;

DROP TABLE orders;
ALTER TABLE orders_new RENAME TO orders;
CREATE INDEX orders_customer ON orders (customer_id, id);
CREATE INDEX orders_sync ON orders (state, upstream, synced_at);
CREATE INDEX orders_attention ON orders (attention) WHERE attention IS NOT NULL;
