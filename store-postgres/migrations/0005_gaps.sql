-- 5: the sequence numbers each node's stream still awaits (`store::encode_gaps`), so a replay
-- reaching a restarted aggregator fills its gap
ALTER TABLE nodes ADD COLUMN gaps BYTEA;
