-- 10: BMC System Event Log entries, one row each; a replayed entry is not stored twice
CREATE TABLE hardware_sel (
    node TEXT COLLATE "C" NOT NULL,
    record_id INTEGER NOT NULL,
    ts_s BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    sensor_type SMALLINT NOT NULL,
    sensor_number SMALLINT NOT NULL,
    sensor TEXT,
    event_type SMALLINT NOT NULL,
    asserted BOOLEAN NOT NULL,
    event_offset SMALLINT NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (node, record_id, ts_s)
);
CREATE INDEX hardware_sel_node_received ON hardware_sel (node, received_ms);
