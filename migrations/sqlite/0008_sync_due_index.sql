-- The sync claim (placed orders of one upstream, least recently synced first, by id) read in
-- index order, as PostgreSQL's `orders_sync` is: `LIMIT 100` then stops after 100 rows. Without
-- it, once `ANALYZE` has found `orders_sync (state, upstream, synced_at)` unselective (every
-- open order unsynced, one upstream), SQLite sorts every order of the customer for each batch of
-- 100: a pass over N open orders cost O(N^2).
CREATE INDEX orders_sync_due ON orders (upstream, synced_at, id) WHERE state = 'placed';
