-- Rate governors' recent admissions (bridge/http/journal.py): a restarted process seeds its
-- limiters from the last window. Rows older than the longest window are deleted as new ones
-- are written, so the table stays a few hundred rows per limiter.
CREATE TABLE admissions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    limiter      TEXT NOT NULL,
    admitted_at  REAL NOT NULL,               -- store clock, before the request was sent
    answered_at  REAL                         -- store clock; NULL: never answered (yet)
);
CREATE INDEX admissions_by_limiter ON admissions (limiter, admitted_at);
