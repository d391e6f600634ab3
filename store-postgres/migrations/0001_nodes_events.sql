-- 1: nodes (latest state, frames as received) and agent events
CREATE TABLE nodes (
    node TEXT PRIMARY KEY,
    role TEXT,
    last_seen_ms BIGINT NOT NULL,
    last_report_ts_ms BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    received BIGINT NOT NULL,
    duplicates BIGINT NOT NULL,
    missing BIGINT NOT NULL,
    hello BYTEA,
    inventory BYTEA,
    report BYTEA,
    guests BYTEA
);
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    node TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    severity TEXT NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX events_node_ts ON events (node, ts_ms);
