"""A small shop, in the field types Django apps use most (tests/apps/django_shop/app.py drives it).

SHOP_STAGE=2 is the app after its second migration (0002: a new NOT NULL field with a default,
which Django's SQLite backend applies by rebuilding the table, and a changed field type)."""

import os
import uuid

from django.db import models

STAGE = int(os.environ.get("SHOP_STAGE", "1"))


class Tag(models.Model):
    name = models.CharField(max_length=30, unique=True)


class Customer(models.Model):
    TIERS = [("free", "Free"), ("pro", "Pro"), ("team", "Team")]
    uid = models.UUIDField(default=uuid.uuid4, unique=True)
    name = models.CharField(max_length=80)
    email = models.EmailField(unique=True)
    prefs = models.JSONField(default=dict)
    active = models.BooleanField(default=True)
    joined = models.DateTimeField()
    birthday = models.DateField(null=True)
    tier = models.CharField(max_length=10, choices=TIERS, default="free")
    if STAGE >= 2:
        nickname = models.CharField(max_length=40, default="")


class Product(models.Model):
    sku = models.CharField(max_length=20, unique=True)
    title = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    tags = models.ManyToManyField(Tag, related_name="products")


class Order(models.Model):
    STATUSES = [("new", "New"), ("paid", "Paid"), ("shipped", "Shipped"), ("void", "Void")]
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    placed = models.DateTimeField()
    status = models.CharField(max_length=12, choices=STATUSES, default="new")
    total = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    if STAGE >= 2:
        note = models.CharField(max_length=500, blank=True, default="")
    else:
        note = models.TextField(blank=True, default="")


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="lines")
    qty = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)
