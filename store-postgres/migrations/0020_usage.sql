-- 20: utilisation history (one row per VM and day, a fixed-size summary) and exemptions
CREATE TABLE usage_vms (
    id BIGSERIAL PRIMARY KEY,
    vm TEXT NOT NULL UNIQUE
);
CREATE TABLE usage_days (
    vm_id BIGINT NOT NULL,
    day INTEGER NOT NULL,
    summary BYTEA NOT NULL,
    PRIMARY KEY (vm_id, day)
);
CREATE INDEX usage_days_day ON usage_days (day);
CREATE TABLE usage_exemptions (
    id BIGINT PRIMARY KEY,
    vm TEXT NOT NULL,
    body TEXT NOT NULL
);
