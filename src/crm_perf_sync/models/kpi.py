"""Materialised KPI results, targets and scorecards."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Boolean, Date, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_perf_sync.kit.columns import BigIntPK, JSONDoc, UTCDateTime
from crm_perf_sync.models.base import Base


class KpiValue(Base):
    """A KPI's value for one period and scope.

    ``period_key`` is the ISO date of the period's start in the business timezone (``all`` for the
    all-time grain); ``scope_id`` is ``company``, ``<namespace>:<team id>`` or
    ``<connection>:<owner id>``; ``currency`` is empty for KPIs that are not amounts.
    ``dimension`` and ``dimension_value`` are empty for the total and name the breakdown
    otherwise (a funnel's rows are broken down by ``stage``). ``definition_hash`` names the
    definition version every row of a KPI was computed with. ``target``, ``attainment`` and
    ``gap`` are set where a target exists; pace depends on the clock and is derived when read.
    """

    __tablename__ = "kpi_value"
    __table_args__ = (
        UniqueConstraint(
            "kpi_id",
            "grain",
            "period_key",
            "scope",
            "scope_id",
            "currency",
            "dimension",
            "dimension_value",
            name="uq_kpi_value_key",
        ),
        Index(None, "kpi_id", "grain", "scope", "period_start"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kpi_id: Mapped[str] = mapped_column(String(63))
    definition_hash: Mapped[str] = mapped_column(String(32))
    grain: Mapped[str] = mapped_column(String(16))
    period_key: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[date | None] = mapped_column(Date)
    period_end: Mapped[date | None] = mapped_column(Date)
    scope: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[str] = mapped_column(String(600))
    currency: Mapped[str] = mapped_column(String(3))
    dimension: Mapped[str] = mapped_column(String(63), default="")
    dimension_value: Mapped[str] = mapped_column(String(255), default="")
    value: Mapped[float | None] = mapped_column(Float)
    numerator: Mapped[float] = mapped_column(Float)
    denominator: Mapped[float | None] = mapped_column(Float)
    sample_count: Mapped[int] = mapped_column(Integer)
    low_sample: Mapped[bool] = mapped_column(Boolean)
    target: Mapped[float | None] = mapped_column(Float)
    attainment: Mapped[float | None] = mapped_column(Float)
    gap: Mapped[float | None] = mapped_column(Float)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Medians and percentiles: the value at the lower rank the statistic reads, and how many of
    #: the value's samples are below it and equal to it. An incremental refresh moves the
    #: statistic from there by the values the change log adds and removes. A full refresh keeps
    #: it for all-time values only; a period's value gains it when it is first moved.
    rank_pivot: Mapped[float | None] = mapped_column(Float)
    rank_below: Mapped[int | None] = mapped_column(Integer)
    rank_equal: Mapped[int | None] = mapped_column(Integer)


#: The columns that pick one rep's cell of a median or percentile KPI's samples. The rep comes
#: first: an index that began with the KPI would offer every other cell's query a scan of it.
_OWNER_CELL = ("owner_external_id", "connection_id", "kpi_id", "dimension", "currency", "dimension_value")


class KpiSample(Base):
    """The measured value of each record a median or percentile KPI ranks (one row per record).

    Medians and percentiles do not add up, so unlike sums they cannot be updated by the change
    log alone: a value a changed record touches is moved from its rank state by reading the
    samples next to its pivot, or ranked again. This keeps the values to rank (and each record's
    finest period, rep, currency and breakdown value) so that both read this narrow table instead
    of re-deriving every record's value; the change log keeps it current.
    ``dimension`` is the breakdown the rows belong to ('' for the totals).
    """

    __tablename__ = "kpi_sample"
    __table_args__ = (
        UniqueConstraint("kpi_id", "dimension", "connection_id", "external_id"),
        # A period's samples; those of one month next to a value, for moving a period's
        # statistic by a few ranks.
        Index(None, "kpi_id", "dimension", "month", "value"),
        # The samples next to a value, for moving an all-time statistic by a few ranks.
        Index(None, "kpi_id", "dimension", "value"),
        # The same for a rep's values, a sliver of all: all time, and month by month.
        Index("ix_kpi_sample_owner_value", *_OWNER_CELL, "value"),
        Index("ix_kpi_sample_owner_month_value", *_OWNER_CELL, "month", "value"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kpi_id: Mapped[str] = mapped_column(String(63))
    dimension: Mapped[str] = mapped_column(String(63))
    connection_id: Mapped[str] = mapped_column(String(63))
    external_id: Mapped[str] = mapped_column(String(255))
    week: Mapped[int | None] = mapped_column(Integer)
    month: Mapped[int | None] = mapped_column(Integer)
    owner_external_id: Mapped[str | None] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(String(3))
    dimension_value: Mapped[str] = mapped_column(String(255))
    value: Mapped[float] = mapped_column(Float)


class KpiTarget(Base):
    """A target in force for one KPI, period, scope and currency, after decomposition.

    ``origin`` says where it came from: ``set`` (given for exactly this period and scope),
    ``period`` (decomposed from a larger period) or ``team`` (split from a team to its reps);
    ``source`` is ``config`` or ``api``.
    """

    __tablename__ = "kpi_target"
    __table_args__ = (UniqueConstraint("kpi_id", "grain", "period_key", "scope", "scope_id", "currency"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kpi_id: Mapped[str] = mapped_column(String(63))
    grain: Mapped[str] = mapped_column(String(16))
    period_key: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    scope: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[str] = mapped_column(String(600))
    currency: Mapped[str] = mapped_column(String(3))
    value: Mapped[float] = mapped_column(Float)
    origin: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ScorecardValue(Base):
    """One rep's score on a scorecard for one period, with its graded, ranked breakdown.

    ``components`` lists every component with its KPI value, target, normalised score, weight as
    configured and as applied, and why it was dropped (``dropped``: null when it counted).
    ``rank`` is within the company, ``team_rank`` within ``team_id`` (the rep's own team).
    """

    __tablename__ = "scorecard_value"
    __table_args__ = (
        UniqueConstraint("scorecard_id", "grain", "period_key", "scope_id"),
        Index(None, "scorecard_id", "grain", "period_start"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    scorecard_id: Mapped[str] = mapped_column(String(63))
    definition_hash: Mapped[str] = mapped_column(String(32))
    grain: Mapped[str] = mapped_column(String(16))
    period_key: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    scope_id: Mapped[str] = mapped_column(String(600))
    team_id: Mapped[str | None] = mapped_column(String(600))
    score: Mapped[float | None] = mapped_column(Float)
    grade: Mapped[str | None] = mapped_column(String(16))
    rank: Mapped[int | None] = mapped_column(Integer)
    team_rank: Mapped[int | None] = mapped_column(Integer)
    dropped_components: Mapped[int] = mapped_column(Integer)
    components: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc)
    #: Per perspective (scorecards that group their components): its sub-score and weights.
    perspectives: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, default=list)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class KpiRefreshState(Base):
    """Per KPI: the definition and context (teams, calendar, targets, grains) of its values.

    An incremental refresh applies the store's change log to a KPI's values only when both
    still match; otherwise the KPI is recomputed whole.
    """

    __tablename__ = "kpi_refresh_state"

    kpi_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    definition_hash: Mapped[str] = mapped_column(String(32))
    context_hash: Mapped[str] = mapped_column(String(32))
    refreshed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: When a refresh last changed any of the KPI's values: the version readers cache against.
    values_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ScorecardState(Base):
    """When a scorecard's scores last changed: the version readers cache against."""

    __tablename__ = "scorecard_state"

    scorecard_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class KpiRefreshRun(Base):
    """One KPI refresh: when, how long, what it did (``full`` or by ``changes``), how it ended."""

    __tablename__ = "kpi_refresh_run"
    __table_args__ = (Index(None, "started_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    values_written: Mapped[int] = mapped_column(Integer, default=0)
    recomputed: Mapped[list[str]] = mapped_column(JSONDoc)
    updated: Mapped[list[str]] = mapped_column(JSONDoc)
    error: Mapped[str | None] = mapped_column(Text)


class TargetDefinition(Base):
    """A target set through the API (the configuration's live in the YAML file).

    ``definition`` is a target as the configuration would write it (see ``TargetConfig``); the
    refresh decomposes these together with the configured ones, and on a tie in specificity
    the API's wins.
    """

    __tablename__ = "target_definition"

    id: Mapped[int] = mapped_column(primary_key=True)
    kpi_id: Mapped[str] = mapped_column(String(63), index=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
