"""Live SQLite -> Neon (Postgres) replication for zero-downtime migrations."""

__version__ = "0.1.0"
