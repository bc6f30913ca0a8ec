-- 0001: the first schema of the durable store.
-- Applied once in a transaction; `PRAGMA user_version` records the last applied migration.

-- The last known state of every agent (one row per agent, overwritten on every change).
CREATE TABLE agent_state (
    agent_id   TEXT PRIMARY KEY NOT NULL,
    status     TEXT NOT NULL,           -- effective status (wire name), for reports
    state      TEXT NOT NULL,           -- JSON of AgentState (its wire form)
    session    TEXT NOT NULL,           -- JSON of Session (not on the wire)
    version    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL         -- ms since the Unix epoch
) WITHOUT ROWID;

-- Append-only: one row per change of `status` or `manual_status`.
CREATE TABLE status_history (
    id          INTEGER PRIMARY KEY,
    agent_id    TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status   TEXT NOT NULL,
    from_manual TEXT NOT NULL,
    to_manual   TEXT NOT NULL,
    reason      TEXT,
    note        TEXT,
    call_id     TEXT,
    at          INTEGER NOT NULL,       -- ms since the Unix epoch
    version     INTEGER NOT NULL        -- the agent's version after the change
);
CREATE INDEX status_history_agent_at ON status_history (agent_id, at);
CREATE INDEX status_history_at ON status_history (at);

-- Telephony event ids and the first reply to each, for deduplication across restarts.
CREATE TABLE event_ids (
    event_id TEXT PRIMARY KEY NOT NULL,
    error    TEXT,                      -- NULL for ok, else the error code
    fields   TEXT NOT NULL,             -- JSON fields of the reply after type/ref
    at       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX event_ids_at ON event_ids (at);

-- The agent directory and ring groups (seeded from the TOML file on first start).
CREATE TABLE directory_agents (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT,
    teams           TEXT NOT NULL DEFAULT '[]',   -- JSON array of team ids
    wrap_up_seconds INTEGER,
    ring_groups     TEXT NOT NULL DEFAULT '[]'    -- JSON array of ring group ids
) WITHOUT ROWID;

CREATE TABLE ring_groups (
    id                   TEXT PRIMARY KEY NOT NULL,
    ring_timeout_seconds INTEGER,
    members              TEXT NOT NULL DEFAULT '[]'   -- JSON array of agent ids
) WITHOUT ROWID;

-- Small facts about the store itself (e.g. `directory_seeded`).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- One row per applied migration (PRAGMA user_version is the authority; this is the log).
CREATE TABLE schema_version (
    version    INTEGER PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
);
