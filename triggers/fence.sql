-- The cutover fence: after cutover every write to this table fails loudly, so nothing can be
-- written to the side that is no longer the source of truth. `replicator uninstall` lifts it.
CREATE TRIGGER {trigger_insert} BEFORE INSERT ON {table}
BEGIN
    SELECT RAISE(ABORT, {message});
END;

CREATE TRIGGER {trigger_update} BEFORE UPDATE ON {table}
BEGIN
    SELECT RAISE(ABORT, {message});
END;

CREATE TRIGGER {trigger_delete} BEFORE DELETE ON {table}
BEGIN
    SELECT RAISE(ABORT, {message});
END;
