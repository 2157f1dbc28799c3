"""A small ledger, in the column types SQLAlchemy 2 apps use most (tests/apps/sqla_ledger/app.py
drives it; the schema itself is made by the Alembic revisions in alembic/versions/).

LEDGER_STAGE=2 is the app after its second revision (0002: a new NOT NULL column with a server
default on ``account``, and ``entry.memo`` changed from TEXT to VARCHAR(500), which Alembic's batch
mode applies on SQLite by rebuilding the table: "move and copy").

What SQLAlchemy stores in SQLite for these types (checked with SQLAlchemy 2.1 and the pysqlite
driver; Postgres gets the native type in each case):

* ``Uuid``: CHAR(32), 32 lowercase hex digits without dashes (Postgres: uuid).
* ``JSON``: TEXT, ``json.dumps`` with its default separators (Postgres: jsonb, by the variant).
* ``Numeric(12, 2)``: NUMERIC(12, 2) column, written as a Python float (pysqlite has no Decimal),
  so SQLite keeps a REAL, or an INTEGER when the value is whole (NUMERIC affinity). Reading gives
  a Decimal rounded to the scale (``"%.2f" % value``), so SQL arithmetic such as
  ``amount + 0.01`` leaves REALs like 830.1899999999999 that the app reads as 830.19.
* ``Enum(Kind)``: VARCHAR(8) holding the member *names* (no CHECK: SQLAlchemy 2 creates none
  unless ``create_constraint=True``); Postgres: a real enum type ``account_kind`` of the names.
* ``Boolean``: INTEGER 0/1 (no CHECK either).
* ``DateTime(timezone=True)``: TEXT ``YYYY-MM-DD HH:MM:SS.ffffff`` (microseconds always). The
  offset is dropped, not converted: the app must write UTC, and reads naive datetimes back from
  SQLite (aware ones from Postgres' timestamptz).
* ``DateTime()``: the same text (Postgres: timestamp without time zone).
* ``Date``: TEXT ``YYYY-MM-DD``.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import uuid
from decimal import Decimal

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

STAGE = int(os.environ.get("LEDGER_STAGE", "1"))

# The constraint names the revisions use (batch mode on SQLite needs named constraints).
NAMING = {"pk": "pk_%(table_name)s", "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
          "uq": "uq_%(table_name)s_%(column_0_name)s", "ix": "ix_%(table_name)s_%(column_0_name)s",
          "ck": "ck_%(table_name)s_%(constraint_name)s"}

JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")


class Kind(enum.Enum):
    PERSONAL = "personal"
    BUSINESS = "business"
    JOINT = "joint"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


entry_labels = Table(
    "entry_labels", Base.metadata,
    Column("entry_id", ForeignKey("entry.id", ondelete="CASCADE"), primary_key=True),
    Column("label_id", ForeignKey("label.id", ondelete="CASCADE"), primary_key=True),
)


class Account(Base):
    __tablename__ = "account"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(80))
    email: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[Kind] = mapped_column(Enum(Kind, name="account_kind", native_enum=True),
                                       default=Kind.PERSONAL)
    meta: Mapped[dict] = mapped_column(JSONType, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    opened: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    birthday: Mapped[dt.date | None] = mapped_column(Date)
    if STAGE >= 2:
        nickname: Mapped[str] = mapped_column(String(40), server_default="")

    # The ORM deletes an account's entries itself (and their entry_labels rows); the foreign
    # keys' ON DELETE CASCADE does the same for deletes that bypass the ORM.
    entries: Mapped[list[Entry]] = relationship(back_populates="account",
                                                cascade="all, delete-orphan",
                                                order_by="Entry.id")


class Entry(Base):
    __tablename__ = "entry"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"),
                                            index=True)
    booked: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    if STAGE >= 2:
        memo: Mapped[str] = mapped_column(String(500), default="")
    else:
        memo: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[dt.datetime] = mapped_column(DateTime())  # naive, the app's UTC wall time

    account: Mapped[Account] = relationship(back_populates="entries")
    labels: Mapped[list[Label]] = relationship(secondary=entry_labels, back_populates="entries",
                                               order_by="Label.id")


class Label(Base):
    __tablename__ = "label"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(30), unique=True)

    entries: Mapped[list[Entry]] = relationship(secondary=entry_labels, back_populates="labels")
