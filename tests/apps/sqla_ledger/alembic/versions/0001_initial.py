"""The ledger: accounts, their entries, labels on entries.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

KIND = sa.Enum("PERSONAL", "BUSINESS", "JOINT", name="account_kind")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "account",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("email", sa.String(120), nullable=False),
        sa.Column("kind", KIND, nullable=False),
        sa.Column("meta", JSON, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("opened", sa.DateTime(timezone=True), nullable=False),
        sa.Column("birthday", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_account"),
        sa.UniqueConstraint("uid", name="uq_account_uid"),
        sa.UniqueConstraint("email", name="uq_account_email"),
    )
    op.create_table(
        "label",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(30), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_label"),
        sa.UniqueConstraint("name", name="uq_label_name"),
    )
    op.create_table(
        "entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("booked", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
        sa.Column("memo", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_entry"),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"], name="fk_entry_account_id_account",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_entry_account_id", "entry", ["account_id"])
    op.create_table(
        "entry_labels",
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("label_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", "label_id", name="pk_entry_labels"),
        sa.ForeignKeyConstraint(["entry_id"], ["entry.id"], name="fk_entry_labels_entry_id_entry",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["label_id"], ["label.id"], name="fk_entry_labels_label_id_label",
                                ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("entry_labels")
    op.drop_index("ix_entry_account_id", table_name="entry")
    op.drop_table("entry")
    op.drop_table("label")
    op.drop_table("account")
    KIND.drop(op.get_bind(), checkfirst=True)
