"""The Django shop, driven from the command line, on SQLite or on Postgres.

    python app.py DB migrate [TARGET]    apply the app's migrations (TARGET: e.g. 0001)
    python app.py DB seed N              N customers with orders, written through the ORM
    python app.py DB churn SEED N        N write transactions of the app's usual shapes
    python app.py DB reads               the app's read queries, answers as JSON
    python app.py DB dump                every row of every model through the ORM, as JSON
    python app.py DB writes              the app's write paths; exit 1 if one fails

DB is a SQLite path or a postgresql:// URL. SHOP_STAGE selects the models' version (models.py).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote, urlsplit

import django
from django.conf import settings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def configure(db: str) -> None:
    if db.startswith("postgres"):
        u = urlsplit(db)
        database = {"ENGINE": "django.db.backends.postgresql", "NAME": u.path.lstrip("/"),
                    "USER": unquote(u.username or ""), "PASSWORD": unquote(u.password or ""),
                    "HOST": u.hostname, "PORT": u.port or 5432}
    else:
        database = {"ENGINE": "django.db.backends.sqlite3", "NAME": db,
                    "OPTIONS": {"timeout": 20}}
    settings.configure(
        DATABASES={"default": database},
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "shop"],
        USE_TZ=True, TIME_ZONE="UTC", DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


def seed(n: int) -> None:
    from django.db import transaction
    from django.db.models import F
    from shop.models import Customer, Order, OrderLine, Product, Tag

    rng = random.Random(11)
    base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    with transaction.atomic():
        tags = [Tag.objects.create(name=t) for t in ("new", "sale", "eco", "gift", "bulk")]
        products = []
        for i in range(40):
            p = Product.objects.create(sku=f"SKU-{i:04d}", title=f"Product {i} «ünïcode»",
                                       price=Decimal(rng.randint(100, 99999)) / 100)
            p.tags.set(rng.sample(tags, rng.randint(0, 3)))
            products.append(p)
        # Prices raised through the database, as apps do: float arithmetic in SQLite's REAL
        # column leaves digits beyond the declared scale (930.1899999999999).
        raised = [p.pk for p in products[::3]]
        Product.objects.filter(pk__in=raised).update(price=F("price") + Decimal("0.01"))
        for i in range(n):
            c = Customer.objects.create(
                name=f"Customer {i}", email=f"c{i}@example.com",
                prefs={"theme": rng.choice(["dark", "light"]), "n": i, "tags": ["a", "b"][: i % 3],
                       "ratio": i / 7},
                active=rng.random() < 0.8, joined=base + dt.timedelta(seconds=rng.randint(0, 10**7),
                                                                       microseconds=rng.choice([0, 123456])),
                birthday=dt.date(1970, 1, 1) + dt.timedelta(days=rng.randint(0, 15000)) if i % 4 else None,
                tier=rng.choice(["free", "pro", "team"]))
            for _ in range(rng.randint(0, 3)):
                o = Order.objects.create(customer=c, placed=c.joined + dt.timedelta(days=1),
                                         status=rng.choice(["new", "paid", "shipped"]),
                                         note="tab\there\nnewline" if i % 5 == 0 else "")
                total = Decimal(0)
                for p in rng.sample(products, rng.randint(1, 4)):
                    line = OrderLine.objects.create(order=o, product=p, qty=rng.randint(1, 5),
                                                    unit_price=p.price)
                    total += line.unit_price * line.qty
                o.total = total
                o.save()


def churn(seed_: int, n: int) -> None:
    """Write transactions of the usual shapes: Django's default (autocommit, and atomic blocks
    that read, then write), creates, updates, F() arithmetic, cascade deletes, M2M changes."""
    from django.db import transaction
    from django.db.models import F
    from shop.models import Customer, Order, OrderLine, Product, Tag

    rng = random.Random(seed_)
    for i in range(n):
        kind = i % 6
        with transaction.atomic():
            if kind == 0:
                c = Customer.objects.create(
                    name=f"New {seed_}-{i}", email=f"n{seed_}-{i}@example.com",
                    prefs={"theme": "dark", "source": "churn", "i": i}, joined=dt.datetime.now(dt.UTC))
                o = Order.objects.create(customer=c, placed=dt.datetime.now(dt.UTC), status="new")
                p = Product.objects.order_by("?").first()
                OrderLine.objects.create(order=o, product=p, qty=2, unit_price=p.price)
            elif kind == 1:
                c = Customer.objects.order_by("?").first()
                c.prefs = {**c.prefs, "theme": rng.choice(["dark", "light", "solar"])}
                c.active = not c.active
                c.save()
            elif kind == 2:
                Product.objects.filter(pk=Product.objects.order_by("?").first().pk).update(
                    price=F("price") + Decimal("0.01"))
            elif kind == 3:
                victim = Customer.objects.filter(email__startswith="n").order_by("?").first()
                if victim is not None:
                    victim.delete()  # cascades to orders and lines
            elif kind == 4:
                p = Product.objects.order_by("?").first()
                p.tags.add(Tag.objects.order_by("?").first())
                p.tags.remove(Tag.objects.order_by("?").first())
            else:
                for o in Order.objects.filter(status="new").order_by("id")[:3]:
                    o.status = "paid"
                    o.save(update_fields=["status"])


def reads() -> dict:
    from django.db.models import Count, Max, Min, Q, Sum
    from shop.models import Customer, Order, OrderLine, Product, Tag

    first = Customer.objects.order_by("id").first()
    out = {
        "customers": Customer.objects.count(),
        "by_uid": Customer.objects.get(uid=first.uid).email,
        "by_uid_str": Customer.objects.filter(uid=str(first.uid)).count(),
        "dark_theme": Customer.objects.filter(prefs__theme="dark").count(),
        "prefs_has_tags": Customer.objects.filter(prefs__has_key="tags").count(),
        "active": Customer.objects.filter(active=True).count(),
        "tiers": dict(Customer.objects.values_list("tier").annotate(n=Count("id")).order_by("tier")),
        "born_before_1990": Customer.objects.filter(birthday__lt=dt.date(1990, 1, 1)).count(),
        "joined_march": Customer.objects.filter(joined__month=3).count(),
        "first_names": list(Customer.objects.order_by("name").values_list("name", flat=True)[:5]),
        "prices": [str(p) for p in Product.objects.order_by("sku").values_list("price", flat=True)],
        "expensive": Product.objects.filter(price__gt=Decimal("500.00")).count(),
        "price_930_19": Product.objects.filter(price=Decimal("930.19")).count(),
        "tags_per_product": list(Product.objects.annotate(n=Count("tags")).order_by("sku")
                                 .values_list("sku", "n")[:10]),
        "sale_products": Tag.objects.get(name="sale").products.count(),
        "orders_by_status": dict(Order.objects.values_list("status").annotate(n=Count("id"))
                                 .order_by("status")),
        "top_customers": list(Customer.objects.annotate(n=Count("orders")).order_by("-n", "id")
                              .values_list("email", "n")[:5]),
        "placed_range": [str(v) for v in Order.objects.aggregate(a=Min("placed"), b=Max("placed")).values()],
        "lines_qty": OrderLine.objects.aggregate(q=Sum("qty"))["q"],
        "notes_with_tab": Order.objects.filter(note__contains="\t").count(),
        "paid_or_shipped": Order.objects.filter(Q(status="paid") | Q(status="shipped")).count(),
        "revenue": str(Order.objects.aggregate(s=Sum("total"))["s"]),
    }
    return out


def dump() -> dict:
    from django.apps import apps

    out = {}
    for model in apps.get_app_config("shop").get_models():
        rows = []
        for r in model.objects.order_by("pk").values():
            rows.append({k: _plain(v) for k, v in r.items()})
        out[model.__name__] = rows
        for m2m in model._meta.many_to_many:
            through = m2m.remote_field.through
            out[through.__name__] = [list(r) for r in through.objects.order_by("pk").values_list()]
    return out


def _plain(v):
    if isinstance(v, (Decimal, uuid.UUID, dt.datetime, dt.date)):
        return f"{type(v).__name__}:{v}"
    return v


def writes() -> dict:
    from django.db.models import F
    from shop.models import Customer, Order, OrderLine, Product, Tag

    checks = {}

    def check(name, fn):
        try:
            fn()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            checks[name] = f"{type(exc).__name__}: {exc}"

    def create():
        c = Customer.objects.create(name="After", email="after@example.com", prefs={"theme": "dark"},
                                    joined=dt.datetime.now(dt.UTC))
        o = Order.objects.create(customer=c, placed=dt.datetime.now(dt.UTC))
        OrderLine.objects.create(order=o, product=Product.objects.first(), qty=1,
                                 unit_price=Decimal("1.00"))
        Tag.objects.create(name="after")

    def update():
        c = Customer.objects.order_by("id").first()
        c.name = "Renamed"
        c.save()
        Product.objects.filter(pk=Product.objects.order_by("id").first().pk).update(price=F("price") + 1)

    def uuid_lookup():
        c = Customer.objects.order_by("id").last()
        assert Customer.objects.get(uid=c.uid).pk == c.pk

    def json_lookup():
        Customer.objects.filter(prefs__theme="dark").update(active=True)
        assert Customer.objects.filter(prefs__theme="dark", active=False).count() == 0

    def m2m():
        p = Product.objects.order_by("id").first()
        p.tags.add(Tag.objects.get(name="after"))
        assert p.tags.filter(name="after").exists()

    def cascade():
        c = Customer.objects.get(email="after@example.com")
        c.delete()
        assert not Order.objects.filter(customer_id=c.pk).exists()

    for name, fn in (("create", create), ("update", update), ("uuid_lookup", uuid_lookup),
                     ("json_lookup", json_lookup), ("m2m", m2m), ("cascade_delete", cascade)):
        check(name, fn)
    return checks


def main() -> int:
    db, command, *rest = sys.argv[1:]
    configure(db)
    if command == "migrate":
        from django.core.management import call_command

        for app in ("contenttypes", "auth"):
            call_command("migrate", app, verbosity=0)
        call_command("migrate", "shop", *rest[:1], verbosity=0)
        return 0
    if command == "makemigrations":
        from django.core.management import call_command

        call_command("makemigrations", "shop", verbosity=1)
        return 0
    if command == "seed":
        seed(int(rest[0]))
        return 0
    if command == "churn":
        churn(int(rest[0]), int(rest[1]))
        return 0
    if command == "reads":
        print(json.dumps(reads(), default=str, sort_keys=True))
        return 0
    if command == "dump":
        print(json.dumps(dump(), default=str, sort_keys=True))
        return 0
    if command == "writes":
        checks = writes()
        print(json.dumps(checks, sort_keys=True))
        return 0 if all(v == "ok" for v in checks.values()) else 1
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main())
