-- 41: the audit log hash-chained and append-only (each entry stores the previous entry's hash
-- and its own), retention checkpoints signed by the aggregator; only entries before the latest
-- checkpoint may be deleted.
ALTER TABLE audit ADD COLUMN role TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN unit TEXT;
ALTER TABLE audit ADD COLUMN source TEXT;
ALTER TABLE audit ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT '';
CREATE TABLE audit_checkpoints (
    id BIGSERIAL PRIMARY KEY,
    first_kept_id BIGINT NOT NULL,
    prev_hash TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    signature TEXT NOT NULL
);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit'
       AND OLD.id < COALESCE((SELECT MAX(first_kept_id) FROM audit_checkpoints), 0) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: only entries before a retention checkpoint may be removed';
END;
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_append_only_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
