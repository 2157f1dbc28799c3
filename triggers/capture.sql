-- Capture triggers for one table: log the key of every inserted, updated and deleted row.
-- They use no functions and no constraints, so they cannot make the application's write fail.
-- An UPDATE that changes the key logs the old key too ('K'), so the old row is removed.
CREATE TRIGGER {trigger_insert} AFTER INSERT ON {table}
BEGIN
    INSERT INTO "_replicator_log" (tbl, op{key_list}) VALUES ({table_literal}, 'I'{new_keys});
END;

CREATE TRIGGER {trigger_update} AFTER UPDATE ON {table}
BEGIN
    INSERT INTO "_replicator_log" (tbl, op{key_list})
        SELECT {table_literal}, 'K'{old_keys} WHERE {key_changed};
    INSERT INTO "_replicator_log" (tbl, op{key_list}) VALUES ({table_literal}, 'U'{new_keys});
END;

CREATE TRIGGER {trigger_delete} AFTER DELETE ON {table}
BEGIN
    INSERT INTO "_replicator_log" (tbl, op{key_list}) VALUES ({table_literal}, 'D'{old_keys});
END;
