"""The csv connector's settings: where the exports are and how their columns become records.

Everything dataset-specific lives in the configuration; this module only knows the canonical
records. The shape, in YAML (every key is checked; a typo is an error at that key)::

    settings:
      data_dir: ../shared/data/maven      # relative paths resolve against the working directory
      timezone: UTC                       # naive timestamps in the files are in this zone
      encoding: utf-8-sig                 # defaults for every file (a BOM is skipped)
      delimiter: ","
      null_values: [""]                   # cells meaning "missing" (after trimming spaces)
      batch_size: 5000                    # a checkpoint every this many rows
      max_row_lines: 100                  # lines one row may span (quoted line breaks)
      streams:                            # any of: teams, owners, pipeline_stages, accounts,
        opportunities:                    #   leads, opportunities, activities, stage_changes
          file: sales_pipeline.csv        # relative to data_dir
          null_values: [Select]           # added to the defaults for this file
          key: [opportunity_id]           # columns forming external_id when the file has no id
          id_rule: {pattern: "[A-Z0-9]{8}", max_length: 8}   # what a plausible id looks like
          joins:                          # lookup tables, matched on one column
            owner: {file: Users.csv, key: Potential Owner, match: Last Name}
          fields:                         # canonical field: a column name, or a field spec
            owner_external_id: {join: owner, column: USER_ID}
            amount: {column: Amount}      # "$22,700.00" -> Decimal("22700.00")
            currency: {value: USD}        # a constant
            created_at: {column: Created Time, format: "%d %b, %Y %H:%M:%S"}
            product: {column: product, map: {GTXPro: GTX Pro}}
          custom:                         # named custom dimensions kept in ``custom``
            series: {join: product, column: series}
          stages:                         # the stage table: classifies each deal by its stage
            pipeline: sales
            table:
              - {stage: Won, is_won: true, probability: 1.0}

A row is a bad record, never a record, when its structure is broken (the wrong number of cells,
every cell empty, a quoted field never closed or longer than ``max_row_lines``), when its id is
not plausible by ``id_rule``, or when a required field is empty (the id; a field with
``required: true``; the stage, when a stage table with ``unknown: error`` classifies the deals).

A field spec takes its text from exactly one of ``column`` (with ``join``: a column of the joined
row), ``template`` (``"team:{manager}"``; empty if any named column is empty) or ``value`` (a
constant). The text is trimmed, checked against the null markers, translated by ``map`` (matched
case-insensitively with ``ignore_case``; ``unmapped`` says what happens to other values) and then
parsed as the canonical field's type. A cell that cannot be parsed makes its row a bad record.
"""

from __future__ import annotations

import codecs
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, Field, field_validator, model_validator

from crm_perf_sync.connector_sdk import ConnectorSettings, StrictModel
from crm_perf_sync.connector_sdk.mapping import StageTable, TextList, ValueMap

PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def template_columns(template: str) -> list[str]:
    """The column names a template refers to; ``{{`` and ``}}`` are literal braces.

    Raises ``ValueError`` for an empty placeholder or an unmatched brace.
    """
    columns = []
    for match in PLACEHOLDER.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if token in ("{", "}"):
            raise ValueError(f"unmatched {token!r} in template {template!r} (write {token * 2} for a brace)")
        name = match.group(1).strip()
        if not name:
            raise ValueError(f"empty placeholder {{}} in template {template!r}")
        columns.append(name)
    if not columns:
        raise ValueError(f"template {template!r} names no column; use value: for a constant")
    return columns


def _check_zone(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA timezone {value!r} (e.g. UTC, Europe/Berlin)") from None
    return value


def _check_encoding(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        codecs.lookup(value)
    except LookupError:
        raise ValueError(f"unknown encoding {value!r} (e.g. utf-8, utf-8-sig, cp1252, latin-1)") from None
    return value


def _check_delimiter(value: str | None) -> str | None:
    if value is not None and len(value) != 1:
        raise ValueError(f"a delimiter is one character, got {value!r}")
    return value


# --- field specs ------------------------------------------------------------------------------------

T = TypeVar("T")


class FieldSpec(StrictModel, Generic[T]):
    """Where one field's value comes from and how its text is cleaned before it is parsed.

    A bare string in YAML is shorthand for ``{column: <string>}``.
    """

    column: str | None = Field(default=None, description="the column holding the value")
    join: str | None = Field(default=None, description="take ``column`` from this join's matched row")
    template: str | None = Field(default=None, description='text built from columns: "team:{manager}"')
    value: T | None = Field(default=None, description="a constant instead of a column")
    null_values: TextList = Field(default=(), description="more cells meaning missing, for this field")
    map: ValueMap = Field(default_factory=dict, description="value translations, applied before parsing")
    ignore_case: bool = Field(default=False, description="match ``map`` keys case-insensitively")
    unmapped: Literal["keep", "null", "error"] = Field(
        default="keep", description="a value ``map`` does not list: kept, made missing, or a bad record"
    )
    required: bool = Field(default=False, description="a row where the value is missing is a bad record")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: object) -> object:
        if isinstance(data, str):
            return {"column": data}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [
            name
            for name, present in (
                ("column", self.column is not None),
                ("template", self.template is not None),
                ("value", "value" in self.model_fields_set),
            )
            if present
        ]
        if len(given) != 1:
            detail = f"got {', '.join(given)}" if given else "got none"
            raise ValueError(f"give exactly one of column, template or value ({detail})")
        if self.join is not None and self.column is None:
            raise ValueError("join needs the column of the joined file to take")
        if self.template is not None:
            template_columns(self.template)
        if self.ignore_case:
            folded = [key.casefold() for key in self.map]
            if len(folded) != len(set(folded)):
                raise ValueError("map has keys that differ only in case, which ignore_case makes ambiguous")
        return self


class TextField(FieldSpec[str]):
    """A text field (ids, names, stages, sources ...)."""


class AmountField(FieldSpec[Decimal]):
    """A money amount: ``"$22,700.00"``, ``"1054"``, ``"(300.00)"`` (negative), ``"1.200,50 €"``.

    Currency symbols and spaces are dropped; the currency itself is the ``currency`` field.
    """

    decimal_separator: Literal[".", ","] = "."
    thousands_separator: Literal[",", ".", " ", "'", ""] = ","

    @model_validator(mode="after")
    def _distinct_separators(self) -> Self:
        if self.decimal_separator == self.thousands_separator:
            raise ValueError("decimal_separator and thousands_separator must differ")
        return self


class ProbabilityField(FieldSpec[float]):
    """A win probability; stored as a fraction in [0, 1]."""

    scale: Literal["fraction", "percent"] = Field(
        default="fraction", description="percent: the file says 0-100 (a trailing % is accepted)"
    )

    @model_validator(mode="after")
    def _constant_in_range(self) -> Self:
        limit = 100.0 if self.scale == "percent" else 1.0
        if self.value is not None and not 0.0 <= self.value <= limit:
            raise ValueError(f"value must be within 0-{limit:g} ({self.scale})")
        return self


DEFAULT_TRUE = ("true", "yes", "y", "1", "t")
DEFAULT_FALSE = ("false", "no", "n", "0", "f")


class BoolField(FieldSpec[bool]):
    """A yes/no field; the values are matched case-insensitively, anything else is a bad record."""

    true_values: TextList = DEFAULT_TRUE
    false_values: TextList = DEFAULT_FALSE

    @model_validator(mode="after")
    def _disjoint(self) -> Self:
        both = {v.casefold() for v in self.true_values} & {v.casefold() for v in self.false_values}
        if both:
            raise ValueError(f"values both true and false: {sorted(both)}")
        return self


Formats = Annotated[tuple[str, ...], BeforeValidator(lambda v: (v,) if isinstance(v, str) else v)]


class _TemporalOptions(StrictModel):
    format: Formats = Field(
        default=(),
        description="strptime formats tried in order; none: ISO 8601 (2024-05-01, 2024-05-01T10:00:00+02:00)",
    )

    @field_validator("format")
    @classmethod
    def _formats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for fmt in value:
            if "%" not in fmt:
                raise ValueError(f"{fmt!r} is not a strptime format (e.g. '%d %b, %Y %H:%M:%S')")
        return value


class DateTimeField(FieldSpec[datetime], _TemporalOptions):
    """A point in time. Naive values are in ``timezone`` (default: the settings' zone), stored as UTC.

    A date without a time is midnight in that zone.
    """

    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return _check_zone(value)


class DateField(FieldSpec[date], _TemporalOptions):
    """A calendar date; a value with a time keeps only its date, as written."""


class IntegerField(FieldSpec[int]):
    """A whole number."""


CustomType = Literal["string", "integer", "number", "decimal", "boolean", "date", "datetime"]


class CustomField(FieldSpec[str | int | float | bool], _TemporalOptions):
    """A named custom dimension kept in the record's ``custom`` (dates as ISO strings, decimals as text)."""

    type: CustomType = "string"
    timezone: str | None = None
    true_values: TextList = DEFAULT_TRUE
    false_values: TextList = DEFAULT_FALSE
    decimal_separator: Literal[".", ","] = "."
    thousands_separator: Literal[",", ".", " ", "'", ""] = ","

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return _check_zone(value)

    @model_validator(mode="after")
    def _options_fit_type(self) -> Self:
        applies = {
            "format": ("date", "datetime"),
            "timezone": ("datetime",),
            "true_values": ("boolean",),
            "false_values": ("boolean",),
            "decimal_separator": ("decimal", "number"),
            "thousands_separator": ("decimal", "number"),
        }
        for option, types in applies.items():
            if option in self.model_fields_set and self.type not in types:
                raise ValueError(f"{option} applies to type {' or '.join(types)}, not {self.type}")
        return self


# --- canonical fields per entity -------------------------------------------------------------------


class TeamFields(StrictModel):
    """One team per row (a teams export with its own ids)."""

    external_id: TextField | None = None
    name: TextField | None = Field(default=None, description="default: the external id")
    parent_external_id: TextField | None = None
    level: TextField | None = None


class TeamLevel(StrictModel):
    """One level of the organisation that every row of a people file spells out (region, team)."""

    level: str | None = Field(default=None, description="label of the level, e.g. region or team")
    external_id: TextField
    name: TextField | None = Field(default=None, description="default: the external id")


class OwnerFields(StrictModel):
    external_id: TextField | None = None
    name: TextField | None = None
    email: TextField | None = None
    active: BoolField | None = None
    team_external_id: TextField | None = None
    remote_updated_at: DateTimeField | None = None


class AccountFields(StrictModel):
    """An account (customer). Where the CRM names accounts only by name, the name is the id."""

    external_id: TextField | None = None
    name: TextField | None = Field(default=None, description="not mapped: the external id")
    owner_external_id: TextField | None = None
    industry: TextField | None = None
    segment: TextField | None = None
    parent_external_id: TextField | None = None
    created_at: DateTimeField | None = None
    is_deleted: BoolField | None = None
    remote_updated_at: DateTimeField | None = None


class LeadFields(StrictModel):
    external_id: TextField | None = None
    owner_external_id: TextField | None = None
    name: TextField | None = None
    email: TextField | None = None
    company: TextField | None = None
    account_external_id: TextField | None = None
    source: TextField | None = None
    status: TextField | None = None
    created_at: DateTimeField | None = None
    is_converted: BoolField | None = None
    converted_at: DateTimeField | None = None
    converted_opportunity_external_id: TextField | None = None
    is_deleted: BoolField | None = None
    remote_updated_at: DateTimeField | None = None


class OpportunityFields(StrictModel):
    external_id: TextField | None = None
    owner_external_id: TextField | None = None
    name: TextField | None = None
    amount: AmountField | None = None
    currency: TextField | None = None
    stage: TextField | None = None
    probability: ProbabilityField | None = None
    pipeline: TextField | None = None
    forecast_category: TextField | None = None
    type: TextField | None = None
    lead_source: TextField | None = None
    account_external_id: TextField | None = None
    product: TextField | None = None
    created_at: DateTimeField | None = None
    close_date: DateField | None = None
    closed_at: DateTimeField | None = Field(
        default=None, description="kept for closed deals only: an open deal's close date is a forecast"
    )
    is_closed: BoolField | None = None
    is_won: BoolField | None = None
    lead_external_id: TextField | None = None
    is_deleted: BoolField | None = None
    remote_updated_at: DateTimeField | None = None


class ActivityFields(StrictModel):
    """An activity: ``type`` is call, meeting, visit, email, task, proposal, note or a configured
    lower-case kind; ``map`` translates the CRM's own kinds ("Site visit": visit), and ``subtype``
    keeps them as written."""

    external_id: TextField | None = None
    type: TextField | None = None
    occurred_at: DateTimeField | None = None
    owner_external_id: TextField | None = None
    subtype: TextField | None = None
    subject: TextField | None = None
    duration_seconds: IntegerField | None = None
    outcome: TextField | None = None
    is_completed: BoolField | None = None
    account_external_id: TextField | None = None
    opportunity_external_id: TextField | None = None
    lead_external_id: TextField | None = None
    created_at: DateTimeField | None = None
    is_deleted: BoolField | None = None
    remote_updated_at: DateTimeField | None = None


class StageChangeFields(StrictModel):
    external_id: TextField | None = None
    opportunity_external_id: TextField | None = None
    from_stage: TextField | None = None
    to_stage: TextField | None = None
    changed_at: DateTimeField | None = None


class PipelineStageFields(StrictModel):
    pipeline: TextField | None = Field(default=None, description='default: "default"')
    stage: TextField | None = None
    label: TextField | None = None
    sort_order: IntegerField | None = Field(default=None, description="default: the row number")
    probability: ProbabilityField | None = None
    is_closed: BoolField | None = None
    is_won: BoolField | None = None


# --- streams -----------------------------------------------------------------------------------------


#: Characters no id holds: C0 and C1 controls (line breaks, tabs, NUL ...). An id with one is a
#: row broken by its quoting, or bytes that are not text.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")
#: The store's id columns hold this many characters.
MAX_ID_LENGTH = 255


class IdRule(StrictModel):
    """What a plausible id of the stream looks like; a row whose id is not is a bad record.

    An id never holds control characters (a line break in an id is a row merged with the lines
    after it). By default any other text of up to 255 characters is an id.
    """

    pattern: str | None = Field(
        default=None, description="a regular expression the whole id matches, e.g. '[A-Z0-9]{8}'"
    )
    max_length: int = Field(default=MAX_ID_LENGTH, ge=1, le=MAX_ID_LENGTH)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
        return value

    def problem(self, value: str) -> str | None:
        """Why ``value`` is not a plausible id, or ``None`` when it is one."""
        if CONTROL_CHARACTERS.search(value):
            return "it holds a control character"
        if len(value) > self.max_length:
            return f"{len(value)} characters, more than the {self.max_length} the mapping allows"
        if self.pattern is not None and re.fullmatch(self.pattern, value) is None:
            return f"it does not match the pattern {self.pattern}"
        return None


class JoinConfig(StrictModel):
    """A lookup table: the row of ``file`` whose ``match`` column equals this row's ``key``.

    The joined file is held in memory (only the columns used), so joins are for dimension tables:
    users, teams, products, accounts. Keys are compared with spaces trimmed and collapsed.
    """

    file: str = Field(min_length=1)
    key: TextField = Field(description="this file's value to look up: a column or a field spec")
    match: str = Field(min_length=1, description="the column of the joined file holding the key")
    ignore_case: bool = False
    required: bool = Field(default=False, description="a row without a match is a bad record")
    encoding: str | None = None
    delimiter: str | None = None

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str | None) -> str | None:
        return _check_encoding(value)

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str | None) -> str | None:
        return _check_delimiter(value)

    @field_validator("key")
    @classmethod
    def _key_is_local(cls, value: TextField) -> TextField:
        if value.join is not None:
            raise ValueError("a join key comes from this stream's own file, not from another join")
        return value


class FileStream(StrictModel):
    """What every file-based stream has: the file, how to read it, and its lookup tables."""

    file: str = Field(min_length=1, description="path relative to data_dir")
    encoding: str | None = Field(default=None, description="default: the settings' encoding")
    delimiter: str | None = Field(default=None, description="default: the settings' delimiter")
    null_values: TextList = Field(default=(), description="more cells meaning missing, for this file")
    max_row_lines: int | None = Field(
        default=None, ge=1, le=1_000_000, description="default: the settings' max_row_lines"
    )
    joins: dict[str, JoinConfig] = Field(default_factory=dict)

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str | None) -> str | None:
        return _check_encoding(value)

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str | None) -> str | None:
        return _check_delimiter(value)

    def field_specs(self) -> list[tuple[str, FieldSpec[Any]]]:
        """Every field spec of the stream with its location, for cross-checks and column lists."""
        out: list[tuple[str, FieldSpec[Any]]] = []
        fields = getattr(self, "fields", None)
        if isinstance(fields, BaseModel):
            for name in type(fields).model_fields:
                spec = getattr(fields, name)
                if spec is not None:
                    out.append((f"fields.{name}", spec))
        for index, level in enumerate(getattr(self, "levels", None) or []):
            out.append((f"levels[{index}].external_id", level.external_id))
            if level.name is not None:
                out.append((f"levels[{index}].name", level.name))
        for name, spec in (getattr(self, "custom", None) or {}).items():
            out.append((f"custom.{name}", spec))
        return out

    @model_validator(mode="after")
    def _joins_exist(self) -> Self:
        for where, spec in self.field_specs():
            if spec.join is not None and spec.join not in self.joins:
                known = ", ".join(sorted(self.joins)) or "none"
                raise ValueError(f"{where}.join: no join named {spec.join!r} (joins: {known})")
        return self


KeyColumns = Annotated[list[str], Field(min_length=1)]


def _require_key(key: list[str] | None, external_id: TextField | None) -> None:
    if key is not None and external_id is not None:
        raise ValueError("give either key (columns forming the id) or fields.external_id, not both")
    if key is None and external_id is None:
        raise ValueError("the records need an id: give fields.external_id, or key: [columns forming it]")


class TeamsStream(FileStream):
    """Teams: one per row (``fields``), or the levels every row of a people file spells out."""

    key: KeyColumns | None = None
    fields: TeamFields | None = None
    levels: list[TeamLevel] | None = Field(default=None, min_length=1)
    id_rule: IdRule = Field(default_factory=IdRule)
    keep_raw: bool = True

    @model_validator(mode="after")
    def _one_mode(self) -> Self:
        if (self.fields is None) == (self.levels is None):
            raise ValueError("give either fields (one team per row) or levels (a hierarchy per row)")
        if self.fields is not None:
            _require_key(self.key, self.fields.external_id)
        elif self.key is not None:
            raise ValueError("key applies to fields; each level has its own external_id")
        return self


class _KeyedStream(FileStream):
    """A stream of records that each need an id: an id column or the key columns forming one."""

    key: KeyColumns | None = None
    id_rule: IdRule = Field(default_factory=IdRule)
    keep_raw: bool = True

    @model_validator(mode="after")
    def _has_id(self) -> Self:
        _require_key(self.key, getattr(self, "fields").external_id)  # noqa: B009 - declared by subclasses
        return self


class OwnersStream(_KeyedStream):
    """Owners (reps)."""

    fields: OwnerFields


class AccountsStream(_KeyedStream):
    """Accounts (customers)."""

    fields: AccountFields
    custom: dict[str, CustomField] = Field(default_factory=dict)


class LeadsStream(_KeyedStream):
    """Leads."""

    fields: LeadFields
    custom: dict[str, CustomField] = Field(default_factory=dict)


class OpportunitiesStream(_KeyedStream):
    """Opportunities (deals), optionally classified by a stage table."""

    fields: OpportunityFields
    custom: dict[str, CustomField] = Field(default_factory=dict)
    stages: StageTable | None = None

    @model_validator(mode="after")
    def _stage_is_mapped(self) -> Self:
        if self.stages is not None and self.fields.stage is None:
            raise ValueError("stages classifies deals by fields.stage, which is not mapped")
        return self


class ActivitiesStream(_KeyedStream):
    """Activities (calls, meetings, visits, emails, tasks, proposals, notes)."""

    fields: ActivityFields
    custom: dict[str, CustomField] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _required(self) -> Self:
        missing = [name for name in ("type", "occurred_at") if getattr(self.fields, name) is None]
        if missing:
            raise ValueError(f"fields needs {', '.join(missing)}")
        return self


class StageChangesStream(FileStream):
    """The CRM's own stage history, one row per change."""

    key: KeyColumns | None = None
    id_rule: IdRule = Field(default_factory=IdRule)
    fields: StageChangeFields

    @model_validator(mode="after")
    def _required(self) -> Self:
        if self.key is not None and self.fields.external_id is not None:
            raise ValueError("give either key or fields.external_id, not both")
        missing = [
            name
            for name in ("opportunity_external_id", "to_stage", "changed_at")
            if getattr(self.fields, name) is None
        ]
        if missing:
            raise ValueError(f"fields needs {', '.join(missing)}")
        return self


class PipelineStagesStream(FileStream):
    """Pipeline stages from a file (a CRM's stage export)."""

    fields: PipelineStageFields

    @model_validator(mode="after")
    def _required(self) -> Self:
        if self.fields.stage is None:
            raise ValueError("fields needs stage")
        return self


class Streams(StrictModel):
    """The streams this connection reads; each entity at most once."""

    teams: TeamsStream | None = None
    owners: OwnersStream | None = None
    pipeline_stages: PipelineStagesStream | None = None
    accounts: AccountsStream | None = None
    leads: LeadsStream | None = None
    opportunities: OpportunitiesStream | None = None
    activities: ActivitiesStream | None = None
    stage_changes: StageChangesStream | None = None

    @model_validator(mode="after")
    def _some(self) -> Self:
        if not any(getattr(self, name) is not None for name in type(self).model_fields):
            raise ValueError("configure at least one stream")
        if self.pipeline_stages is not None and self.opportunities and self.opportunities.stages:
            raise ValueError("pipeline_stages come either from a file or from opportunities.stages, not both")
        return self


class CsvSettings(ConnectorSettings):
    """Settings of a ``csv`` connection: CRM export files and the mapping of their columns."""

    data_dir: Path = Field(description="folder of the files; relative to the working directory")
    timezone: str = Field(default="UTC", description="zone of naive timestamps in the files")
    encoding: str = Field(default="utf-8-sig", description="text encoding of the files (a BOM is skipped)")
    delimiter: str = ","
    null_values: TextList = Field(default=("",), description="cells meaning missing, in every file")
    batch_size: int = Field(default=5000, ge=1, le=1_000_000, description="rows per checkpoint")
    max_row_lines: int = Field(
        default=100,
        ge=1,
        le=1_000_000,
        description="lines one row may span (quoted line breaks); a longer row is a bad record",
    )
    streams: Streams

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        _check_zone(value)
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        _check_encoding(value)
        return value

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        _check_delimiter(value)
        return value

    def zone(self) -> ZoneInfo:
        """The zone naive timestamps are read in."""
        return ZoneInfo(self.timezone)
