-- 50: applications (申请), their append-only timeline and files; each VM's allocation term
ALTER TABLE register_vms ADD COLUMN term TEXT;
CREATE TABLE applications (
    id BIGINT PRIMARY KEY,
    unit TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX applications_unit_state ON applications (unit, state);
CREATE TABLE application_log (
    id BIGSERIAL PRIMARY KEY,
    application BIGINT NOT NULL,
    ts_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX application_log_app ON application_log (application, id);
CREATE FUNCTION application_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER application_log_append_only BEFORE UPDATE OR DELETE ON application_log
    FOR EACH ROW EXECUTE FUNCTION application_append_only();
CREATE TRIGGER application_log_append_only_truncate BEFORE TRUNCATE ON application_log
    FOR EACH STATEMENT EXECUTE FUNCTION application_append_only();
CREATE TABLE application_files (
    application BIGINT NOT NULL,
    id BIGINT NOT NULL,
    name TEXT NOT NULL,
    bytes BYTEA NOT NULL,
    PRIMARY KEY (application, id)
);
CREATE TRIGGER application_files_append_only BEFORE UPDATE ON application_files
    FOR EACH ROW EXECUTE FUNCTION application_append_only();
