-- One experiment's webhook deliveries, to every endpoint: the ids of its messages all start
-- with `msg_<experiment id>_` (verdict_domain::outbox), so a range of `message_id` reads
-- them without reading other experiments' deliveries.
CREATE INDEX webhook_deliveries_by_message ON webhook_deliveries (message_id);
