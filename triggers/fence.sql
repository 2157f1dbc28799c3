-- The cutover fence: after cutover every write to this table fails loudly, so nothing can be
-- written to the side that is no longer the source of truth. `replicator uninstall` lifts it.
-- Only the replicator's reverse apply (the fallback window) passes: inside its own write
-- transaction it writes the 'reverse_apply' row checked here, which no other connection sees.
CREATE TRIGGER {trigger_insert} BEFORE INSERT ON {table}
WHEN NOT EXISTS (SELECT 1 FROM "_replicator_meta" WHERE key = 'reverse_apply')
BEGIN
    SELECT RAISE(ABORT, {message});
END;

CREATE TRIGGER {trigger_update} BEFORE UPDATE ON {table}
WHEN NOT EXISTS (SELECT 1 FROM "_replicator_meta" WHERE key = 'reverse_apply')
BEGIN
    SELECT RAISE(ABORT, {message});
END;

CREATE TRIGGER {trigger_delete} BEFORE DELETE ON {table}
WHEN NOT EXISTS (SELECT 1 FROM "_replicator_meta" WHERE key = 'reverse_apply')
BEGIN
    SELECT RAISE(ABORT, {message});
END;
