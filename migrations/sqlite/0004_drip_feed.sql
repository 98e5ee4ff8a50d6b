-- Drip-feed orders answer `runs` and `interval` in their status: panel software reads how many
-- runs are done, and refunds its own user wrongly without it.
-- - `drip_runs` / `drip_interval`: the runs and the minutes between them the customer ordered
--   (NULL: not a drip-feed order); `billed` is then the per-run quantity times `drip_runs`;
-- - `runs_done`: the runs the upstream last reported done (NULL: it never said);
-- - `child_orders`: the child orders the upstream last listed for it, a JSON list of its ids,
--   for the operator (NULL: never listed).
ALTER TABLE orders ADD COLUMN drip_runs INTEGER CHECK (drip_runs > 0);
ALTER TABLE orders ADD COLUMN drip_interval INTEGER CHECK (drip_interval > 0);
ALTER TABLE orders ADD COLUMN runs_done INTEGER CHECK (runs_done >= 0);
ALTER TABLE orders ADD COLUMN child_orders TEXT;
