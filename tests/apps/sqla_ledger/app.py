"""The SQLAlchemy ledger, driven from the command line, on SQLite or on Postgres.

    python app.py DB migrate [REV]       alembic upgrade to REV (e.g. 0001), or to head
    python app.py DB seed N              N accounts with entries, written through the ORM
    python app.py DB churn SEED N        N write transactions of the app's usual shapes
    python app.py DB reads               the app's read queries, answers as JSON
    python app.py DB dump                every row of every table through SQLAlchemy, as JSON
    python app.py DB writes              the app's write paths; exit 1 if one fails

DB is a SQLite path or a postgresql:// URL (driven through psycopg 3). LEDGER_STAGE selects the
models' version (models.py).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sys
import uuid
import warnings
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine, create_engine, delete, event, extract, func, select, update
from sqlalchemy.orm import Session

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from models import STAGE, Account, Base, Entry, Kind, Label, entry_labels  # noqa: E402

# pysqlite has no decimal type: SQLAlchemy writes Numeric values as floats and says so once per
# process. That is the app as it runs on SQLite (models.py); the warning is not news here.
warnings.filterwarnings("ignore", message=r"Dialect sqlite\+pysqlite does \*not\* support Decimal")


def url_for(db: str) -> str:
    if db.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + db.split("://", 1)[1]
    return f"sqlite:///{Path(db).resolve()}?timeout=20"


def make_engine(db: str) -> Engine:
    url = url_for(db)
    if url.startswith("postgresql"):
        # The app's sessions run in UTC (extract(month) of a timestamptz depends on it).
        return create_engine(url, connect_args={"options": "-c timezone=UTC"})
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _foreign_keys_on(dbapi_connection, _record):  # SQLAlchemy's documented SQLite recipe
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    return engine


def migrate(db: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()  # no alembic.ini: the environment is this folder's alembic/
    cfg.set_main_option("script_location", str(HERE / "alembic"))
    cfg.set_main_option("sqlalchemy.url", url_for(db).replace("%", "%%"))  # ConfigParser syntax
    command.upgrade(cfg, revision)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _naive(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def seed(engine: Engine, n: int) -> None:
    rng = random.Random(11)
    base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    with Session(engine) as s, s.begin():
        labels = [Label(name=name) for name in ("rent", "food", "travel", "work", "gift")]
        s.add_all(labels)
        for i in range(n):
            opened = base + dt.timedelta(seconds=rng.randint(0, 10**7),
                                         microseconds=rng.choice([0, 123456]))
            account = Account(
                name=f"Account {i}", email=f"a{i}@example.com", kind=rng.choice(list(Kind)),
                meta={"theme": rng.choice(["dark", "light"]), "n": i, "tags": ["a", "b"][: i % 3],
                      "ratio": i / 7, "city": "Zürich «ünïcode»"},
                active=rng.random() < 0.8, opened=opened,
                birthday=dt.date(1970, 1, 1) + dt.timedelta(days=rng.randint(0, 15000)) if i % 4 else None)
            for j in range(rng.randint(0, 4)):
                account.entries.append(Entry(
                    booked=opened + dt.timedelta(days=j + 1, seconds=rng.randint(0, 86399)),
                    amount=Decimal(rng.randint(-99999, 999999)) / 100,
                    memo="tab\there\nnewline" if i % 5 == 0 else f"entry {j} of {i}",
                    created=_naive(opened) + dt.timedelta(hours=j),
                    labels=rng.sample(labels, rng.randint(0, 3))))
            s.add(account)
        s.flush()
        # Amounts raised through the database, as apps do: float arithmetic in SQLite's REAL
        # leaves digits beyond the declared scale (the app reads them rounded to the scale).
        ids = s.scalars(select(Entry.id).order_by(Entry.id)).all()[::3]
        s.execute(update(Entry).where(Entry.id.in_(ids)).values(amount=Entry.amount + Decimal("0.01")))


def churn(engine: Engine, seed_: int, n: int) -> None:
    """Write transactions of the usual shapes: creates, JSON and bool updates, SQL-expression
    arithmetic, ORM cascade deletes, many-to-many changes."""
    rng = random.Random(seed_)
    for i in range(n):
        kind = i % 6
        with Session(engine) as s, s.begin():
            if kind == 0:
                now = _now()
                labels = s.scalars(select(Label).order_by(func.random()).limit(2)).all()
                account = Account(name=f"New {seed_}-{i}", email=f"n{seed_}-{i}@example.com",
                                  kind=Kind.BUSINESS, meta={"theme": "dark", "source": "churn", "i": i},
                                  opened=now)
                if STAGE >= 2:
                    account.nickname = f"nick {seed_}-{i}"
                account.entries = [
                    Entry(booked=now, amount=Decimal("12.34"), memo=f"churn {i}", created=_naive(now),
                          labels=list(labels)),
                    Entry(booked=now, amount=Decimal("-0.10"), memo="", created=_naive(now)),
                ]
                s.add(account)
            elif kind == 1:
                account = s.scalars(select(Account).order_by(func.random()).limit(1)).one()
                account.meta = {**account.meta, "theme": rng.choice(["dark", "light", "solar"])}
                account.active = not account.active
            elif kind == 2:
                entry_id = s.scalar(select(Entry.id).order_by(func.random()).limit(1))
                s.execute(update(Entry).where(Entry.id == entry_id)
                          .values(amount=Entry.amount + Decimal("0.01")))
            elif kind == 3:
                victim = s.scalars(select(Account).where(Account.email.startswith("n"))
                                   .order_by(func.random()).limit(1)).first()
                if victim is not None:
                    s.delete(victim)  # the ORM deletes its entries and their entry_labels rows
            elif kind == 4:
                entry = s.scalars(select(Entry).order_by(func.random()).limit(1)).one()
                label = s.scalars(select(Label).order_by(func.random()).limit(1)).one()
                if label not in entry.labels:
                    entry.labels.append(label)
                if len(entry.labels) > 1:
                    entry.labels.remove(rng.choice(entry.labels))
            else:
                for entry in s.scalars(select(Entry).where(Entry.memo == "").order_by(Entry.id).limit(3)):
                    entry.memo = f"reviewed {seed_}-{i}"


def _utc(value: dt.datetime | None) -> str | None:
    """A timestamptz as the app means it: SQLite gives it back naive (it is UTC), Postgres aware."""
    if value is None:
        return None
    return (value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)).isoformat()


def reads(engine: Engine) -> dict:
    with Session(engine) as s:

        def count(*where, model=Account) -> int:
            return s.scalar(select(func.count()).select_from(model).where(*where))

        first = s.scalars(select(Account).order_by(Account.id).limit(1)).one()
        n_entries = func.count(Entry.id)
        return {
            "accounts": count(),
            "entries": count(model=Entry),
            "by_uid": s.scalars(select(Account.email).where(Account.uid == first.uid)).one(),
            "by_uid_get": s.get(Account, first.id).uid.hex,
            "dark_theme": count(Account.meta["theme"].as_string() == "dark"),
            "meta_n_over_50": count(Account.meta["n"].as_integer() > 50),
            "active": count(Account.active.is_(True)),
            "kinds": {k.name: c for k, c in s.execute(select(Account.kind, func.count())
                                                      .group_by(Account.kind))},
            "business_or_joint": count(Account.kind.in_([Kind.BUSINESS, Kind.JOINT])),
            "born_before_1990": count(Account.birthday < dt.date(1990, 1, 1)),
            "no_birthday": count(Account.birthday.is_(None)),
            "opened_march": count(extract("month", Account.opened) == 3),
            "opened_from_april": count(Account.opened >= dt.datetime(2025, 4, 1, tzinfo=dt.UTC)),
            "first_names": list(s.scalars(select(Account.name).order_by(Account.name).limit(5))),
            "amounts": [str(v) for v in s.scalars(select(Entry.amount).order_by(Entry.id))],
            "big_entries": count(Entry.amount > Decimal("500.00"), model=Entry),
            "negative": count(Entry.amount < 0, model=Entry),
            "booked_range": [_utc(v) for v in s.execute(select(func.min(Entry.booked),
                                                               func.max(Entry.booked))).one()],
            "created_range": [str(v) for v in s.execute(select(func.min(Entry.created),
                                                                func.max(Entry.created))).one()],
            "created_jan": count(Entry.created < dt.datetime(2025, 2, 1), model=Entry),
            "memo_with_tab": count(Entry.memo.contains("\t"), model=Entry),
            "labels_per_entry": [list(r) for r in s.execute(
                select(Entry.id, func.count(entry_labels.c.label_id)).outerjoin(entry_labels)
                .group_by(Entry.id).order_by(Entry.id).limit(10))],
            "work_entries": count(Entry.labels.any(Label.name == "work"), model=Entry),
            "label_counts": {name: c for name, c in s.execute(
                select(Label.name, func.count(entry_labels.c.entry_id)).outerjoin(entry_labels)
                .group_by(Label.name))},
            "top_accounts": [list(r) for r in s.execute(
                select(Account.email, n_entries).outerjoin(Account.entries).group_by(Account.id)
                .order_by(n_entries.desc(), Account.id).limit(5))],
            "first_entries": [[e.memo, [lb.name for lb in e.labels], str(e.amount)]
                              for e in first.entries],
            "total": str(s.scalar(select(func.sum(Entry.amount)))),
        }


def dump(engine: Engine) -> dict:
    out = {}
    with Session(engine) as s:
        for table in Base.metadata.sorted_tables:
            rows = s.execute(select(table).order_by(*table.primary_key.columns)).mappings()
            out[table.name] = [_dump_row(table, r) for r in rows]
    return out


def _plain(v):
    if isinstance(v, (Decimal, uuid.UUID, dt.datetime, dt.date)):
        return f"{type(v).__name__}:{v}"
    if isinstance(v, Kind):
        return f"Kind:{v.name}"
    return v


def _dump_row(table, row) -> dict:
    """One row rendered; the timezone-aware columns SQLite hands back naive are UTC."""
    return {k: (f"datetime:{_utc(v)}" if v is not None and getattr(table.c[k].type, "timezone", False)
                else _plain(v)) for k, v in row.items()}


def writes(engine: Engine) -> dict:
    checks = {}

    def check(name, fn):
        try:
            with Session(engine) as s, s.begin():
                fn(s)
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            checks[name] = f"{type(exc).__name__}: {exc}"

    def create(s):
        now = _now()
        s.add(Account(name="After", email="after@example.com", meta={"theme": "dark"}, opened=now,
                      kind=Kind.JOINT, entries=[Entry(booked=now, amount=Decimal("1.00"), memo="after",
                                                      created=_naive(now))]))
        s.add(Label(name="after"))

    def update_(s):
        account = s.scalars(select(Account).order_by(Account.id).limit(1)).one()
        account.name = "Renamed"
        entry = s.scalars(select(Entry).order_by(Entry.id).limit(1)).one()
        before = entry.amount
        s.execute(update(Entry).where(Entry.id == entry.id).values(amount=Entry.amount + 1))
        assert s.scalar(select(Entry.amount).where(Entry.id == entry.id)) == before + 1

    def uuid_lookup(s):
        account = s.scalars(select(Account).order_by(Account.id.desc()).limit(1)).one()
        assert s.scalars(select(Account.id).where(Account.uid == account.uid)).one() == account.id

    def json_lookup(s):
        dark = Account.meta["theme"].as_string() == "dark"
        s.execute(update(Account).where(dark).values(active=True))
        assert s.scalar(select(func.count()).select_from(Account).where(dark, Account.active.is_(False))) == 0

    def m2m(s):
        entry = s.scalars(select(Entry).order_by(Entry.id).limit(1)).one()
        entry.labels.append(s.scalars(select(Label).where(Label.name == "after")).one())
        s.flush()
        assert s.scalar(select(func.count()).select_from(Entry).where(
            Entry.id == entry.id, Entry.labels.any(Label.name == "after"))) == 1

    def cascade(s):
        account = s.scalars(select(Account).where(Account.email == "after@example.com")).one()
        s.delete(account)
        s.flush()
        assert s.scalar(select(func.count()).select_from(Entry).where(Entry.account_id == account.id)) == 0

    def db_cascade(s):
        # A bulk delete bypasses the ORM: the foreign keys' ON DELETE CASCADE does the work.
        entry_id, account_id = s.execute(select(Entry.id, Entry.account_id).where(Entry.labels.any())
                                         .order_by(Entry.id).limit(1)).one()
        s.execute(delete(Account).where(Account.id == account_id))
        assert s.scalar(select(func.count()).select_from(Entry).where(Entry.account_id == account_id)) == 0
        assert s.scalar(select(func.count()).select_from(entry_labels)
                        .where(entry_labels.c.entry_id == entry_id)) == 0

    for name, fn in (("create", create), ("update", update_), ("uuid_lookup", uuid_lookup),
                     ("json_lookup", json_lookup), ("m2m", m2m), ("cascade_delete", cascade),
                     ("db_cascade_delete", db_cascade)):
        check(name, fn)
    return checks


def main() -> int:
    db, command, *rest = sys.argv[1:]
    if command == "migrate":
        migrate(db, rest[0] if rest else "head")
        return 0
    engine = make_engine(db)
    if command == "seed":
        seed(engine, int(rest[0]))
        return 0
    if command == "churn":
        churn(engine, int(rest[0]), int(rest[1]))
        return 0
    if command == "reads":
        print(json.dumps(reads(engine), default=str, sort_keys=True))
        return 0
    if command == "dump":
        print(json.dumps(dump(engine), default=str, sort_keys=True))
        return 0
    if command == "writes":
        checks = writes(engine)
        print(json.dumps(checks, sort_keys=True))
        return 0 if all(v == "ok" for v in checks.values()) else 1
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main())
