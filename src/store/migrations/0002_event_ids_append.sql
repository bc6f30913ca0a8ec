-- 0002: event ids in arrival order. The first table was keyed by the (random) event id,
-- so every insert landed on a random page of a large B-tree: at thousands of events per
-- second that was half of the writer's work (each commit rewrote hundreds of 4 KiB pages
-- in the WAL and again at the checkpoint). Rows are now appended (rowid order = the order
-- they were first answered). Uniqueness is kept where it is decided: the hub's in-memory
-- cache answers a known id before anything is stored, and at start the first row of an id
-- wins (`load_event_ids`), which is what `INSERT OR IGNORE` kept before.
CREATE TABLE event_ids_new (
    event_id TEXT NOT NULL,
    error    TEXT,                      -- NULL for ok, else the error code
    fields   TEXT NOT NULL,             -- JSON fields of the reply after type/ref
    at       INTEGER NOT NULL
);
INSERT INTO event_ids_new (event_id, error, fields, at)
    SELECT event_id, error, fields, at FROM event_ids ORDER BY at;
DROP TABLE event_ids;
ALTER TABLE event_ids_new RENAME TO event_ids;
CREATE INDEX event_ids_at ON event_ids (at);
