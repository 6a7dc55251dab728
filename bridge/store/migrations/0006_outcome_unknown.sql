-- Whether an effect's latest attempt may have reached the partner (recorded as sent and
-- never answered, or failed after its request may have left): a field, no longer a prefix
-- of last_error. Rows written before this migration carried it as that prefix.
ALTER TABLE outbox ADD COLUMN outcome_unknown INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET outcome_unknown = 1 WHERE last_error LIKE '[outcome unknown] %';
