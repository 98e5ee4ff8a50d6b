-- Sync work is claimed in leased batches: an order or refill whose lease has not expired is
-- left to the instance that holds it.
ALTER TABLE orders ADD COLUMN lease_until INTEGER;
ALTER TABLE refills ADD COLUMN lease_until INTEGER;
