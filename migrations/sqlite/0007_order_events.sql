-- An order's history for the operator (GET /admin/api/v1/orders/{id}, the console): one row
-- for each change of its state or status, written by triggers in the transaction that made the
-- change, so no code path can forget it. A later migration that rebuilds `orders` must create
-- these triggers again.
-- Also indexes for the operator's listings, which page by id within a state.
CREATE TABLE order_events (
    id       INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    state    TEXT    NOT NULL,
    status   TEXT    NOT NULL,
    remains  INTEGER
);
CREATE INDEX order_events_order ON order_events (order_id, id);

-- Orders placed before this migration start their history where they are now.
INSERT INTO order_events (order_id, at, state, status, remains)
SELECT id, updated_at, state, status, remains FROM orders ORDER BY id;

CREATE TRIGGER order_events_created AFTER INSERT ON orders
BEGIN
    INSERT INTO order_events (order_id, at, state, status, remains)
    VALUES (NEW.id, NEW.updated_at, NEW.state, NEW.status, NEW.remains);
END;

CREATE TRIGGER order_events_changed AFTER UPDATE OF state, status ON orders
WHEN OLD.state IS NOT NEW.state OR OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO order_events (order_id, at, state, status, remains)
    VALUES (NEW.id, NEW.updated_at, NEW.state, NEW.status, NEW.remains);
END;

CREATE INDEX orders_state_id ON orders (state, id);
