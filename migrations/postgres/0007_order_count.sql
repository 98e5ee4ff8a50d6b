-- Each customer's number of orders, kept rather than counted: the operator's customer listings
-- show it, and counting a large customer's orders on every listing grows with the ledger. The
-- store adds one in the statement that posts an order's charge (every order has exactly one),
-- so it moves in the transaction that creates the order. Orders are never deleted.
ALTER TABLE customers ADD COLUMN order_count BIGINT NOT NULL DEFAULT 0
    CONSTRAINT customers_order_count_not_negative CHECK (order_count >= 0);
UPDATE customers SET order_count = (SELECT COUNT(*) FROM orders WHERE orders.customer_id = customers.id);
