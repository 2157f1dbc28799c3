"""The ledger's Alembic environment (online mode only): app.py builds the Config in code, with
``sqlalchemy.url`` set to the database it was given."""

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
# A plain engine: SQLite's foreign keys stay off while migrating (app.py turns them on for the
# app's own sessions). Batch mode drops and renames tables, and with them on a DROP TABLE would
# delete the rows referring to it (ON DELETE CASCADE), as Alembic's documentation warns.
engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
with engine.connect() as connection:
    # render_as_batch: what autogenerate would write for this app (SQLite cannot ALTER most
    # things); the hand-written revisions use op.batch_alter_table themselves.
    context.configure(connection=connection, target_metadata=None, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
