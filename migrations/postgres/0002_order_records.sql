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
-- The uniqueness of (upstream, upstream_order) is not here: the store creates that index
-- after checking that no upstream order is held by two local orders (it names them if so).
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_upstream_order_check;
ALTER TABLE orders ALTER COLUMN upstream_order TYPE TEXT USING upstream_order::text;
ALTER TABLE orders ADD CONSTRAINT orders_upstream_order_not_empty CHECK (upstream_order <> '');
ALTER TABLE orders
    ADD COLUMN attention TEXT CONSTRAINT orders_attention_known
        CHECK (attention IN ('unknown_outcome', 'refund_unknown', 'partial_without_remains', 'stuck')),
    ADD COLUMN list_cost BIGINT CHECK (list_cost >= 0),
    ADD COLUMN first_cost BIGINT,
    ADD COLUMN can_refill BOOLEAN,
    ADD COLUMN can_cancel BOOLEAN,
    ADD COLUMN dispatch_deadline BIGINT,
    ADD COLUMN progress_at BIGINT;
UPDATE orders SET attention = 'unknown_outcome' WHERE state = 'unknown';
CREATE INDEX orders_attention ON orders (attention) WHERE attention IS NOT NULL;
