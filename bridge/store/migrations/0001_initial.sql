-- returns-bridge schema, version 1. Times are epoch seconds (REAL); JSON is TEXT.
CREATE TABLE inbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    source        TEXT    NOT NULL,           -- e.g. "acme/optoro.rmas"
    retailer      TEXT,
    dedup_key     TEXT    NOT NULL,           -- sender's delivery key, else "sha256:<body hash>"
    body_hash     TEXT    NOT NULL,
    body          BLOB    NOT NULL,
    headers       TEXT    NOT NULL,           -- JSON object, secrets removed by the caller
    received_at   REAL    NOT NULL,
    status        TEXT    NOT NULL DEFAULT 'pending',  -- pending|done|superseded|quarantined
    note          TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    lease_owner   TEXT,
    lease_until   REAL,
    processed_at  REAL,
    duplicates    INTEGER NOT NULL DEFAULT 0,
    last_duplicate_at REAL
);
CREATE UNIQUE INDEX inbox_dedup_key ON inbox (source, dedup_key);
CREATE UNIQUE INDEX inbox_body_hash ON inbox (source, body_hash);
CREATE INDEX inbox_pending ON inbox (status, id);

CREATE TABLE entities (
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    version     TEXT NOT NULL,                -- JSON array, compared by the engine
    data        TEXT NOT NULL,                -- JSON
    updated_at  REAL NOT NULL,
    PRIMARY KEY (kind, key)
);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT    NOT NULL UNIQUE,
    destination     TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    order_key       TEXT    NOT NULL,         -- effects with one order_key deliver in id order
    payload         TEXT    NOT NULL,         -- JSON
    source_inbox_id INTEGER,
    retailer        TEXT,
    state           TEXT    NOT NULL DEFAULT 'pending',  -- pending|delivered|dead|canceled
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    lease_owner     TEXT,
    lease_until     REAL,
    created_at      REAL    NOT NULL,
    deadline_at     REAL,
    finished_at     REAL,
    last_error      TEXT,
    result          TEXT,                     -- JSON: response summary when delivered
    dead_reason     TEXT,
    dead_request    TEXT,                     -- JSON: the request as sent
    dead_response   TEXT,                     -- JSON: status and body as received
    flagged         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_order ON outbox (order_key, state, id);

CREATE TABLE cursors (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  REAL NOT NULL
);

CREATE TABLE idempotency (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    state        TEXT NOT NULL,               -- in_progress|done
    response     TEXT,                        -- JSON
    lease_until  REAL,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE tokens (
    name        TEXT PRIMARY KEY,
    secret      BLOB NOT NULL,                -- encrypted by the caller
    version     INTEGER NOT NULL,
    updated_at  REAL NOT NULL
);

CREATE TABLE flags (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    retailer    TEXT,
    entity_kind TEXT NOT NULL,
    entity_key  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    resolved_at REAL,
    UNIQUE (entity_kind, entity_key, reason)
);
