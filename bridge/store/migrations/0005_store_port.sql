-- Store port guarantees on any backend: inbox leased by entity, processes registered with a
-- heartbeat (so a restart takes back only its own dead leases), flags resolvable.
ALTER TABLE inbox ADD COLUMN entity TEXT;     -- NULL: the item is its own entity
CREATE INDEX inbox_entity ON inbox (entity, status, id) WHERE entity IS NOT NULL;

CREATE TABLE instances (
    owner        TEXT PRIMARY KEY,            -- "instance/pid/start_ms"
    instance     TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   REAL NOT NULL,               -- store clock
    heartbeat_at REAL NOT NULL                -- store clock
);
CREATE INDEX inbox_lease_owner ON inbox (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX outbox_lease_owner ON outbox (lease_owner) WHERE lease_owner IS NOT NULL;
