-- The PostgreSQL ledger's schema: the SQLite ledger's, table for table,
-- with the same append-only guarantees (triggers refuse UPDATE and
-- DELETE) and NOTIFY on what a runner must learn of.
CREATE FUNCTION graven_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% are append-only: % is refused', replace(TG_TABLE_NAME, '_', ' '), TG_OP;
END;
$$;

CREATE TABLE builds (
    seq              BIGSERIAL PRIMARY KEY,
    app              TEXT    NOT NULL,
    artifact         TEXT    NOT NULL,
    commit_id        TEXT    NOT NULL,
    dirty            BOOLEAN NOT NULL,
    recipe           TEXT    NOT NULL,
    author           TEXT    NOT NULL,
    host             TEXT    NOT NULL,
    started_at       TEXT    NOT NULL,
    finished_at      TEXT    NOT NULL,
    files            BIGINT  NOT NULL,
    bytes            BIGINT  NOT NULL,
    new_bytes        BIGINT  NOT NULL,
    duration_ms      BIGINT  NOT NULL,
    build_command_ms BIGINT  NOT NULL,
    ingest_ms        BIGINT  NOT NULL,
    log              TEXT    NOT NULL
);
CREATE INDEX builds_by_commit ON builds (app, commit_id, recipe);
CREATE INDEX builds_by_artifact ON builds (artifact);
CREATE TRIGGER builds_are_append_only BEFORE UPDATE OR DELETE ON builds
    FOR EACH ROW EXECUTE FUNCTION graven_refuse();
