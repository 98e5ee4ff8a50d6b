-- `orders_state` (0001) and `orders_state_id` (0006) index the same columns, (state, id): every
-- new version of an order row (an add writes three) was entered in both, and both were kept
-- in the shared buffers. The later one stays: SQLite's schema has the same name.
DROP INDEX IF EXISTS orders_state;
