"""The store's change log: what each sync batch changed, for consumers that update incrementally.

Every sync batch that writes accounts, leads, opportunities or activities records one
``store_change_batch`` row (the entity, the connection and the batch's ``synced_at``) in the batch's
own transaction; every row it updates or soft-deletes first has its previous version copied into
``prior_<table>``. A consumer (the KPI engine) reads both in one snapshot: the rows whose
``synced_at`` is a pending batch's are the new versions, the prior copies are the old ones, and it
deletes exactly the log rows it read.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from crm_perf_sync.kit.columns import BigIntPK, UTCDateTime
from crm_perf_sync.models.base import Base
from crm_perf_sync.models.crm import Account, Activity, Lead, Opportunity


class ChangeBatch(Base):
    """One sync batch that changed ``entity`` rows of ``connection_id``, all stamped ``synced_at``."""

    __tablename__ = "store_change_batch"
    __table_args__ = (Index(None, "entity", "connection_id", "synced_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    entity: Mapped[str] = mapped_column(String(32))
    connection_id: Mapped[str] = mapped_column(String(63))
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime)


def _prior_table(source: Table, name: str) -> Table:
    """A copy of ``source``'s columns (all nullable, no constraints) plus the log's own keys."""
    columns = [
        Column("change_id", BigIntPK, primary_key=True),
        Column("record_id", BigInteger, nullable=False),
    ]
    columns += [Column(c.name, c.type, nullable=True) for c in source.columns if c.name != "id"]
    return Table(name, Base.metadata, *columns)


PRIOR_TABLES: dict[str, Table] = {
    "opportunities": _prior_table(Opportunity.__table__, "prior_opportunity"),  # type: ignore[arg-type]
    "leads": _prior_table(Lead.__table__, "prior_lead"),  # type: ignore[arg-type]
    "accounts": _prior_table(Account.__table__, "prior_account"),  # type: ignore[arg-type]
    "activities": _prior_table(Activity.__table__, "prior_activity"),  # type: ignore[arg-type]
}
