-- 2: alarms (latest state of each, the alarm itself as JSON) and the audit log
CREATE TABLE alarms (
    id BIGINT PRIMARY KEY,
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    state TEXT NOT NULL,
    raised_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX alarms_state ON alarms (state);
CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY,
    ts_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_subject_ts ON audit (subject, ts_ms);
CREATE INDEX audit_ts ON audit (ts_ms);
