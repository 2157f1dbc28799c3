-- REPLACE guard for a table with UNIQUE keys besides its primary key.
-- INSERT OR REPLACE, UPDATE OR REPLACE and ON CONFLICT REPLACE delete the rows an incoming row
-- clashes with, and those deletes fire no trigger (unless the app set recursive_triggers). Before
-- each insert or update, log the key of every existing row the new values clash with ('R'): the
-- apply step then finds the row gone and removes it. If the statement fails on the clash instead,
-- the log rows roll back with it.
CREATE TRIGGER {trigger_insert} BEFORE INSERT ON {table}
BEGIN
{insert_body}
END;

CREATE TRIGGER {trigger_update} BEFORE UPDATE ON {table}
BEGIN
{update_body}
END;
