-- outbox.flagged was never written (flags live in the flags table): dropped.
ALTER TABLE outbox DROP COLUMN flagged;
