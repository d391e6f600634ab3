-- 30: reclaim cases, their append-only timeline (a trigger refuses changes), commands
CREATE TABLE reclaim_cases (
    id BIGINT PRIMARY KEY,
    uuid TEXT NOT NULL,
    unit TEXT NOT NULL,
    state TEXT NOT NULL,
    opened_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX reclaim_cases_uuid ON reclaim_cases (uuid);
CREATE INDEX reclaim_cases_unit_state ON reclaim_cases (unit, state);
CREATE TABLE reclaim_log (
    id BIGSERIAL PRIMARY KEY,
    case_id BIGINT NOT NULL,
    ts_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX reclaim_log_case ON reclaim_log (case_id, id);
CREATE FUNCTION reclaim_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'reclaim_log is append-only';
END;
$$;
CREATE TRIGGER reclaim_log_append_only BEFORE UPDATE OR DELETE ON reclaim_log
    FOR EACH ROW EXECUTE FUNCTION reclaim_log_append_only();
CREATE TRIGGER reclaim_log_append_only_truncate BEFORE TRUNCATE ON reclaim_log
    FOR EACH STATEMENT EXECUTE FUNCTION reclaim_log_append_only();
CREATE TABLE commands (
    id TEXT COLLATE "C" PRIMARY KEY,
    node TEXT NOT NULL,
    case_id BIGINT,
    status TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX commands_status ON commands (status);
