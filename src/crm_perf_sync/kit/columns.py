"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Float, Integer, Numeric, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

_CENT = Decimal("0.01")

# SQLite only aliases the rowid (and so auto-increments) for a column declared exactly INTEGER.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONDoc = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime in, an aware UTC datetime out.

    PostgreSQL stores ``timestamptz``. SQLite has no time zones: values are stored as naive UTC
    text, which sorts correctly, and are made aware again on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given for a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """A decimal amount with two places: NUMERIC(18, 2) on PostgreSQL, a float on SQLite.

    SQLite has no decimal type; storing a REAL keeps SUM() native and fast, and amounts up to
    10^13 round-trip exactly at two places.
    """

    impl = Numeric(18, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Float())
        return dialect.type_descriptor(Numeric(18, 2, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return float(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:  # noqa: ARG002
        if value is None:
            return None
        if isinstance(value, Decimal):
            return value
        return Decimal(repr(value)).quantize(_CENT)


def plain_decimal(value: Decimal) -> Decimal:
    """``value`` without trailing zeros, never in exponent form: ``4.50`` is ``4.5``, ``1E+2`` ``100``."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


class ExactDecimal(TypeDecorator[Decimal]):
    """A decimal stored exactly: NUMERIC(18, 6) on PostgreSQL, its text on SQLite.

    SQLite has no decimal type and its NUMERIC affinity would turn ``0.1`` into a binary float;
    a text column keeps the digits as given (``CAST(value AS REAL)`` reads it as a number). Values
    come back in their plain form on both databases, whatever scale PostgreSQL pads them to.
    """

    impl = Numeric(18, 6)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(18, 6, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        plain = plain_decimal(value)
        return format(plain, "f") if dialect.name == "sqlite" else plain

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:  # noqa: ARG002
        if value is None:
            return None
        return plain_decimal(Decimal(str(value)))
