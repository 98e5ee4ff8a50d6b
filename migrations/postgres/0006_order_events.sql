-- An order's history for the operator (GET /admin/api/v1/orders/{id}, the console): one row
-- for each change of its state or status, written by a trigger in the transaction that made the
-- change, so no code path can forget it.
-- Also indexes for the operator's listings: orders page by id within a state, customers by
-- name compared bytewise (COLLATE "C", as the store sorts them).
CREATE TABLE order_events (
    id       BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id BIGINT  NOT NULL,
    at       BIGINT  NOT NULL,
    state    TEXT    NOT NULL,
    status   TEXT    NOT NULL,
    remains  BIGINT
);
CREATE INDEX order_events_order ON order_events (order_id, id);

-- Orders placed before this migration start their history where they are now.
INSERT INTO order_events (order_id, at, state, status, remains)
SELECT id, updated_at, state, status, remains FROM orders ORDER BY id;

CREATE FUNCTION order_events_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT'
       OR NEW.state IS DISTINCT FROM OLD.state
       OR NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO order_events (order_id, at, state, status, remains)
        VALUES (NEW.id, NEW.updated_at, NEW.state, NEW.status, NEW.remains);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER order_events_record AFTER INSERT OR UPDATE OF state, status ON orders
FOR EACH ROW EXECUTE FUNCTION order_events_record();

CREATE INDEX orders_state_id ON orders (state, id);
CREATE INDEX customers_name_bytes ON customers ((name COLLATE "C"));
