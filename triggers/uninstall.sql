-- Remove every replicator object from the SQLite file (triggers are listed by the caller).
DROP TABLE IF EXISTS "_replicator_log";
DROP TABLE IF EXISTS "_replicator_meta";
