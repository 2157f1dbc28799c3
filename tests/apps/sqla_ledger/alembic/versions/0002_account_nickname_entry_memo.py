"""account.nickname (NOT NULL, server default ''), entry.memo TEXT -> VARCHAR(500).

On SQLite the batch context adds the column with ALTER TABLE ADD COLUMN (SQLite can) and
rebuilds ``entry`` for the type change (move and copy: a new table, the rows copied, the old one
dropped, the new one renamed); on Postgres both are plain ALTER TABLE statements.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("nickname", sa.String(40), nullable=False, server_default=""))
    with op.batch_alter_table("entry") as batch:
        batch.alter_column("memo", existing_type=sa.Text(), type_=sa.String(500),
                           existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("entry") as batch:
        batch.alter_column("memo", existing_type=sa.String(500), type_=sa.Text(),
                           existing_nullable=False)
    with op.batch_alter_table("account") as batch:
        batch.drop_column("nickname")
