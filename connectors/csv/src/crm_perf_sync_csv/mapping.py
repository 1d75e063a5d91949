"""A stream's mapping compiled against the file's header: one function from a row to a record.

Compiling resolves every column to its position once, so a missing column is a configuration
error before the first record, and the per-row work is list indexing and the value parsers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from crm_perf_sync.connector_sdk import (
    ACTIVITY_TYPES,
    AccountRecord,
    ActivityRecord,
    BadRecord,
    ConnectorConfigError,
    LeadRecord,
    Message,
    OpportunityRecord,
    OwnerRecord,
    PipelineStageRecord,
    Scalar,
    SkippableRecordError,
    StageChangeRecord,
    TeamRecord,
    ensure_utc,
    values,
)
from crm_perf_sync.connector_sdk.mapping import StageClassifier
from crm_perf_sync.connector_sdk.records import ACTIVITY_TYPE
from crm_perf_sync_csv.files import BrokenRow, CsvFile, CsvReader
from crm_perf_sync_csv.settings import (
    PLACEHOLDER,
    AmountField,
    BoolField,
    CustomField,
    DateField,
    DateTimeField,
    FieldSpec,
    FileStream,
    IdRule,
    IntegerField,
    JoinConfig,
    OpportunitiesStream,
    ProbabilityField,
    TeamsStream,
)

Getter = Callable[["Row"], Any]
#: The longest id a bad record's message quotes.
_SHOWN_ID = 80


class Header:
    """A file's column names and where each one is."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.width = len(names)
        self.index: dict[str, int] = {}
        self.duplicates: set[str] = set()
        for position, name in enumerate(names):
            if name in self.index:
                self.duplicates.add(name)
            else:
                self.index[name] = position
        # A trailing delimiter on every line gives a nameless last column; it is never data.
        self.named = [(position, name) for position, name in enumerate(names) if name]
        self.plain = len(self.named) == self.width and not self.duplicates


class Row(Mapping[str, str]):
    """One data row: its cells by position, and by column name as a mapping (the raw payload)."""

    __slots__ = ("broken", "cells", "header", "joined", "line", "number", "part")

    def __init__(
        self,
        header: Header,
        cells: list[str],
        line: int,
        number: int,
        part: int = 0,
        broken: BrokenRow | None = None,
    ) -> None:
        self.header = header
        self.cells = cells
        self.line = line
        self.number = number
        self.part = part
        self.broken = broken
        self.joined: dict[str, tuple[str, ...] | None] = {}

    def __getitem__(self, name: str) -> str:
        position = self.header.index[name]
        return self.cells[position] if position < len(self.cells) else ""

    def __iter__(self) -> Iterator[str]:
        return (name for _, name in self.header.named)

    def __len__(self) -> int:
        return len(self.header.named)

    def as_dict(self) -> dict[str, str]:
        """The row as the raw payload a record keeps: column → cell, as written."""
        cells = self.cells
        if self.header.plain:
            return dict(zip(self.header.names, cells, strict=False))
        return {name: cells[position] for position, name in self.header.named if position < len(cells)}


@dataclass(slots=True)
class _Columns:
    """Resolves column names against one header, collecting every missing one for one report."""

    file: CsvFile
    header: Header
    used_by: str
    missing: list[str] = field(default_factory=list)

    def position(self, column: str, where: str) -> int:
        if column in self.header.duplicates:
            self.missing.append(f"column {column!r} ({where}) appears more than once in the header")
            return 0
        position = self.header.index.get(column)
        if position is None:
            self.missing.append(f"no column {column!r} ({where})")
            return 0
        return position

    def check(self) -> None:
        if self.missing:
            shown = ", ".join(repr(name) for name in self.header.names if name)
            raise ConnectorConfigError(
                f"{self.file.label} ({self.used_by}): {'; '.join(self.missing)}. The file's columns: {shown}"
            )


def _normalise_key(value: str, ignore_case: bool) -> str:
    collapsed = " ".join(value.split())
    return collapsed.casefold() if ignore_case else collapsed


class JoinTable:
    """A lookup file held in memory: the key column's value → the cells of the columns used."""

    def __init__(
        self, alias: str, config: JoinConfig, file: CsvFile, used_columns: list[str], where: str
    ) -> None:
        self.alias = alias
        self.config = config
        self.file = file
        self.where = where
        self.columns = used_columns
        self.rows: dict[str, tuple[str, ...]] = {}
        self.ambiguous: dict[str, int] = {}
        self.unmatched = 0
        self.example: str | None = None
        self.broken = 0
        self.first_broken: BrokenRow | None = None
        self.sha256 = ""
        self.key: Getter = _constant(None)
        self.stream_file = ""  # the label of the file whose rows look up here, for reports
        self._match = 0
        self._positions: list[int] = []

    def open(self) -> CsvReader:
        """Open the file and check it has the match column and every column taken from it."""
        self.file.require(self.where)
        reader = CsvReader(self.file)
        try:
            columns = _Columns(self.file, Header(reader.header), self.where)
            self._match = columns.position(self.config.match, "match")
            self._positions = [columns.position(name, f"taken as {name!r}") for name in self.columns]
            columns.check()
        except BaseException:
            reader.close()
            raise
        return reader

    def load(self) -> None:
        """Read the whole lookup file; a key found on several rows is ambiguous, never guessed."""
        with self.open() as reader:
            first_line: dict[str, int] = {}
            for item in reader.rows():
                if isinstance(item, BrokenRow):
                    # Not a row of the lookup table: rows looking it up find no match (reported).
                    self.broken += 1
                    if self.first_broken is None:
                        self.first_broken = item
                    continue
                line, cells = item
                key = _normalise_key(cells[self._match], self.config.ignore_case)
                if not key:
                    continue
                if key in self.rows:
                    self.ambiguous.setdefault(key, first_line[key])
                    continue
                first_line[key] = line
                self.rows[key] = tuple(
                    cells[position].strip() if position < len(cells) else "" for position in self._positions
                )
            self.sha256 = reader.sha256()

    def lookup(self, row: Row) -> tuple[str, ...] | None:
        """The matched cells for ``row`` or ``None``; an ambiguous or required-but-absent match raises."""
        value = self.key(row)
        if value is None:
            if self.config.required:
                raise self._error(row, f"the key of join {self.alias!r} is empty")
            return None
        key = _normalise_key(value, self.config.ignore_case)
        found = self.rows.get(key)
        if found is None:
            if self.config.required:
                raise self._error(
                    row,
                    f"no row of {self.file.label} has {self.config.match} = {value!r} (join {self.alias!r})",
                )
            self.unmatched += 1
            if self.example is None:
                self.example = value
            return None
        if key in self.ambiguous:
            raise self._error(
                row,
                f"{value!r} matches several rows of {self.file.label} (first on line {self.ambiguous[key]}); "
                f"join {self.alias!r} cannot choose",
            )
        return found

    def _error(self, row: Row, message: str) -> SkippableRecordError:
        return SkippableRecordError(
            f"{self.stream_file} line {row.line}: {message}", field=f"joins.{self.alias}"
        )


def _constant(value: Any) -> Getter:
    return lambda _row: value


@dataclass(slots=True)
class _Context:
    file: CsvFile
    columns: _Columns
    nulls: frozenset[str]
    zone: ZoneInfo
    joins: Mapping[str, JoinTable]


def _parser(spec: FieldSpec[Any], zone: ZoneInfo) -> values.Parser:
    if isinstance(spec, AmountField):
        return values.amount_parser(spec.decimal_separator, spec.thousands_separator)
    if isinstance(spec, ProbabilityField):
        return values.probability_parser(spec.scale)
    if isinstance(spec, BoolField):
        return values.bool_parser(spec.true_values, spec.false_values)
    if isinstance(spec, DateTimeField):
        return values.datetime_parser(spec.format, ZoneInfo(spec.timezone) if spec.timezone else zone)
    if isinstance(spec, DateField):
        return values.date_parser(spec.format)
    if isinstance(spec, IntegerField):
        return values.integer
    if isinstance(spec, CustomField):
        return _custom_parser(spec, zone)
    return values.text


def _custom_parser(spec: CustomField, zone: ZoneInfo) -> values.Parser:
    # Custom dimensions hold JSON scalars: dates as ISO text, decimals as exact text.
    if spec.type == "integer":
        return values.integer
    if spec.type == "number":
        number = values.amount_parser(spec.decimal_separator, spec.thousands_separator)
        return lambda value: float(number(value))
    if spec.type == "decimal":
        amount = values.amount_parser(spec.decimal_separator, spec.thousands_separator)
        return lambda value: str(amount(value))
    if spec.type == "boolean":
        return values.bool_parser(spec.true_values, spec.false_values)
    if spec.type == "date":
        day = values.date_parser(spec.format)
        return lambda value: day(value).isoformat()
    if spec.type == "datetime":
        moment = values.datetime_parser(spec.format, ZoneInfo(spec.timezone) if spec.timezone else zone)
        return lambda value: moment(value).isoformat()
    return values.text


def _constant_value(spec: FieldSpec[Any], zone: ZoneInfo) -> Any:
    value = spec.value
    if value is None:
        return None
    if isinstance(spec, DateTimeField):
        return ensure_utc(value, assume=ZoneInfo(spec.timezone) if spec.timezone else zone)
    if isinstance(spec, ProbabilityField):
        return values.probability_parser(spec.scale)(str(value))
    if isinstance(spec, CustomField) and isinstance(value, date | datetime | Decimal):
        return str(value)
    return value


def _source(
    spec: FieldSpec[Any], where: str, ctx: _Context, nulls: frozenset[str]
) -> tuple[Callable[[Row], str | None], str]:
    """The function giving a spec's trimmed text (``None`` when missing) and how reports name it."""
    if spec.template is not None:
        parts: list[str | int] = []
        last = 0
        for match in PLACEHOLDER.finditer(spec.template):
            parts.append(spec.template[last : match.start()])
            token = match.group(0)
            if token in ("{{", "}}"):
                parts.append(token[0])
            else:
                parts.append(ctx.columns.position(match.group(1).strip(), where))
            last = match.end()
        parts.append(spec.template[last:])
        pieces = [part for part in parts if part != ""]

        def render(row: Row) -> str | None:
            out = []
            for piece in pieces:
                if isinstance(piece, int):
                    cell = row.cells[piece].strip()
                    if cell in nulls:
                        return None
                    out.append(cell)
                else:
                    out.append(piece)
            return "".join(out)

        return render, f"template {spec.template!r}"

    assert spec.column is not None  # the settings model guarantees exactly one source
    if spec.join is not None:
        join = ctx.joins[spec.join]
        slot = join.columns.index(spec.column)
        alias = spec.join

        def joined(row: Row) -> str | None:
            found = row.joined.get(alias)
            return None if found is None else found[slot]

        return joined, f"column {spec.column!r} of {join.file.label} (join {alias!r})"

    position = ctx.columns.position(spec.column, where)
    return (lambda row: row.cells[position].strip()), f"column {spec.column!r}"


def compile_field(spec: FieldSpec[Any], where: str, ctx: _Context) -> tuple[Getter, str]:
    """A getter for one field: source → null markers → value map → parser; with its source's name.

    With ``required``, a missing value raises :class:`SkippableRecordError` (a bad record).
    """
    get, label = _compile_field(spec, where, ctx)
    if not spec.required:
        return get, label
    name = where.removeprefix("fields.")
    file_label = ctx.file.label

    def get_required(row: Row) -> Any:
        value = get(row)
        if value is None:
            raise SkippableRecordError(f"{file_label} line {row.line}: {name} is empty ({label})", field=name)
        return value

    return get_required, label


def _compile_field(spec: FieldSpec[Any], where: str, ctx: _Context) -> tuple[Getter, str]:
    if "value" in spec.model_fields_set:
        return _constant(_constant_value(spec, ctx.zone)), "a constant"
    parse = _parser(spec, ctx.zone)
    nulls = ctx.nulls | frozenset(spec.null_values)
    ignore_case = spec.ignore_case
    table = {(k.casefold() if ignore_case else k): v for k, v in spec.map.items()}
    unmapped = spec.unmapped
    file_label = ctx.file.label
    if spec.column is not None and spec.join is None and not table:
        # The common case, a column taken as it is: one closure per cell instead of three.
        position = ctx.columns.position(spec.column, where)
        label = f"column {spec.column!r}"
        if parse is values.text:

            def get_text(row: Row) -> Any:
                cell = row.cells[position].strip()
                return None if cell in nulls else cell

            return get_text, label

        def get_parsed(row: Row) -> Any:
            cell = row.cells[position].strip()
            if cell in nulls:
                return None
            try:
                return parse(cell)
            except ValueError as exc:
                raise SkippableRecordError(
                    f"{file_label} line {row.line}, {label}: {cell!r} {exc}", field=where
                ) from None

        return get_parsed, label

    source, label = _source(spec, where, ctx, nulls)

    def get(row: Row) -> Any:
        cell = source(row)
        if cell is None or cell in nulls:
            return None
        value = cell
        if table:
            key = cell.casefold() if ignore_case else cell
            if key in table:
                target = table[key]
                if target is None or target in nulls:
                    return None
                value = target
            elif unmapped == "null":
                return None
            elif unmapped == "error":
                raise SkippableRecordError(
                    f"{file_label} line {row.line}, {label}: {cell!r} is not a value the map lists",
                    field=where,
                )
        try:
            return parse(value)
        except ValueError as exc:
            raise SkippableRecordError(
                f"{file_label} line {row.line}, {label}: {value!r} {exc}", field=where
            ) from None

    return get, label


# --- records -----------------------------------------------------------------------------------------


def _escape_key_part(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|")


@dataclass(slots=True)
class _Field:
    name: str
    get: Getter
    label: str


class StreamMapper:
    """Turns the rows of one stream's file into records of its entity.

    ``parse`` is the function handed to :func:`crm_perf_sync.connector_sdk.parse_records`; a row
    that cannot be mapped raises :class:`SkippableRecordError` naming the file, line, column, value
    and field.
    """

    def __init__(
        self,
        entity: str,
        config: FileStream,
        file: CsvFile,
        header: Header,
        joins: Mapping[str, JoinTable],
        nulls: frozenset[str],
        zone: ZoneInfo,
    ) -> None:
        self.entity = entity
        self.config = config
        self.file = file
        self.header = header
        self.joins = joins
        self.parts = 1
        columns = _Columns(file, header, f"streams.{entity}")
        self._ctx = _Context(file, columns, nulls, zone, joins)
        for alias, join in joins.items():
            join.key, _ = compile_field(join.config.key, f"joins.{alias}.key", self._ctx)
            join.stream_file = file.label
        fields = getattr(config, "fields", None)
        self.fields: list[_Field] = []
        if fields is not None:
            for name in type(fields).model_fields:
                spec = getattr(fields, name)
                if spec is not None:
                    get, label = compile_field(spec, f"fields.{name}", self._ctx)
                    self.fields.append(_Field(name, get, label))
        self.custom = [
            _Field(name, *compile_field(spec, f"custom.{name}", self._ctx))
            for name, spec in (getattr(config, "custom", None) or {}).items()
        ]
        key_columns: list[str] | None = getattr(config, "key", None)
        self.key_positions = [columns.position(name, "key") for name in key_columns or []]
        self.keep_raw: bool = getattr(config, "keep_raw", False)
        self.levels: list[tuple[str | None, Getter, Getter | None]] = []
        if isinstance(config, TeamsStream) and config.levels is not None:
            for index, level in enumerate(config.levels):
                ext, _ = compile_field(level.external_id, f"levels[{index}].external_id", self._ctx)
                name = (
                    compile_field(level.name, f"levels[{index}].name", self._ctx)[0] if level.name else None
                )
                self.levels.append((level.level, ext, name))
            self.parts = len(self.levels)
        self._last_team: dict[str, TeamRecord] = {}
        self.id_rule: IdRule = getattr(config, "id_rule", None) or IdRule()
        self.stages: StageClassifier | None = None
        if isinstance(config, OpportunitiesStream) and config.stages is not None:
            stage_source = next((item.label for item in self.fields if item.name == "stage"), "not mapped")
            self.stages = StageClassifier(config.stages, stage_source)
        columns.check()
        self._build: Callable[[Row], Message | None] = {
            "teams": self._team if not self.levels else self._team_level,
            "owners": self._owner,
            "accounts": self._account,
            "leads": self._lead,
            "opportunities": self._opportunity,
            "activities": self._activity,
            "stage_changes": self._stage_change,
            "pipeline_stages": self._pipeline_stage,
        }[entity]

    # -- the entry points --------------------------------------------------------------------------

    def records(self, rows: list[Row]) -> Iterator[Message]:
        """The records of ``rows`` in order, and a :class:`BadRecord` for every row that has none.

        A bad record names the file, the line and what is wrong; its payload is the row's cells
        by column (or, for a row whose quoting is broken, its first line as written).
        """
        label = self.file.label
        for row in rows:
            broken = row.broken
            if broken is not None:
                if broken.cells is None:
                    yield BadRecord(
                        f"{label} line {row.line}: {broken.reason}",
                        key=f"{label}:{row.line}",
                        raw={"line": broken.text or ""},
                    )
                else:
                    raw = row.as_dict()
                    # Cells past the header have no column: they are kept by their position.
                    for position in range(self.header.width, len(row.cells)):
                        raw[f"cell {position + 1}"] = row.cells[position]
                    yield BadRecord(f"{label} line {row.line}: {broken.reason}", key=self.key(row), raw=raw)
                continue
            try:
                message = self.parse(row)
            except SkippableRecordError as exc:
                yield BadRecord(str(exc), key=exc.key or self.key(row), field=exc.field, raw=row.as_dict())
                continue
            if message is not None:
                yield message

    def parse(self, row: Row) -> Message | None:
        """The record for ``row`` (``None`` if the row holds none, e.g. a repeated team)."""
        if self.joins:
            row.joined = {alias: join.lookup(row) for alias, join in self.joins.items()}
        return self._build(row)

    def key(self, row: Row) -> str | None:
        """How a bad row is named in reports: its id when the id columns give a plausible one, else
        file:line."""
        # A row too broken to name falls back to its file and line.
        with suppress(SkippableRecordError, IndexError):
            value: Any = None
            if self.key_positions:
                value = self._key_of(row)
            else:
                value = next((item.get(row) for item in self.fields if item.name == "external_id"), None)
            if isinstance(value, str) and self.id_rule.problem(value) is None:
                return value
        return f"{self.file.label}:{row.line}"

    def broken_joins(self) -> Iterator[str]:
        """One line per joined file that had broken rows, left out of its lookup table."""
        for alias, join in self.joins.items():
            if join.first_broken is not None:
                first = join.first_broken
                yield (
                    f"{join.broken} broken row(s) of {join.file.label} were left out of join {alias!r} "
                    f"(the first, line {first.line}: {first.reason})"
                )

    def unmatched_joins(self) -> Iterator[str]:
        """One line per join that left rows without a match (logged at the end of a read)."""
        for alias, join in self.joins.items():
            if join.unmatched:
                yield (
                    f"{join.unmatched} row(s) of {self.file.label} found no row of {join.file.label} "
                    f"for join {alias!r} (e.g. {join.example!r}); their fields from it are empty"
                )

    # -- shared -----------------------------------------------------------------------------------

    def _values(self, row: Row) -> dict[str, Any]:
        out = {item.name: item.get(row) for item in self.fields}
        if self.key_positions:
            out["external_id"] = self._key_of(row)
        return out

    def _key_of(self, row: Row) -> str | None:
        # One column: its value as is, so `key: [id]` and `external_id: id` give the same ids.
        # Several: joined with "|", escaped so that different rows can never give the same key.
        parts = [row.cells[position].strip() for position in self.key_positions]
        if len(parts) == 1:
            return parts[0] or None
        if not any(parts):
            return None
        return "|".join(_escape_key_part(part) for part in parts)

    def _source(self, name: str) -> str:
        if name == "external_id" and self.key_positions:
            return "key " + ", ".join(repr(self.header.names[p]) for p in self.key_positions)
        return next((item.label for item in self.fields if item.name == name), "not mapped")

    def _require(self, values: dict[str, Any], row: Row, *names: str) -> None:
        for name in names:
            if values.get(name) is None:
                raise SkippableRecordError(
                    f"{self.file.label} line {row.line}: {name} is empty ({self._source(name)})",
                    field=name,
                )
        if "external_id" in names:
            self._check_id(values["external_id"], row)

    def _check_id(self, value: str, row: Row, source: str | None = None) -> None:
        """Raise the bad record an id that the stream's ``id_rule`` does not accept makes."""
        problem = self.id_rule.problem(value)
        if problem is None:
            return
        source = source or self._source("external_id")
        # A long id is left out of the message (the row's payload keeps it): it is usually rows
        # merged into one cell.
        shown = "" if len(value) > _SHOWN_ID else f" {value!r}"
        raise SkippableRecordError(
            f"{self.file.label} line {row.line}: external_id{shown} is not a plausible id "
            f"({source}): {problem}",
            field="external_id",
        )

    def _custom(self, row: Row) -> dict[str, Scalar]:
        return {item.name: item.get(row) for item in self.custom}

    @staticmethod
    def _present(values: dict[str, Any]) -> dict[str, Any]:
        # Missing values fall back to the record's defaults (active=True, is_closed=False, ...).
        return {name: value for name, value in values.items() if value is not None}

    # -- per entity -------------------------------------------------------------------------------

    def _team(self, row: Row) -> Message | None:
        values = self._values(row)
        self._require(values, row, "external_id")
        values.setdefault("name", None)
        if values["name"] is None:
            values["name"] = values["external_id"]
        return TeamRecord(**self._present(values), raw=row.as_dict() if self.keep_raw else None)

    def _team_level(self, row: Row) -> Message | None:
        parent: str | None = None
        for index, (level, ext, name) in enumerate(self.levels):
            external_id = ext(row)
            if index < row.part:
                parent = external_id if external_id is not None else parent
                continue
            if external_id is None:
                return None  # the row has no team at this level (a blank cell): nothing to add
            self._check_id(external_id, row, f"levels[{index}].external_id")
            record = TeamRecord(
                external_id=external_id,
                name=(name(row) if name is not None else None) or external_id,
                parent_external_id=parent,
                level=level,
            )
            # Every member's row repeats its team: emit a team once, and again only if a later
            # row describes it differently (the last description wins, as in the store).
            if self._last_team.get(external_id) == record:
                return None
            self._last_team[external_id] = record
            return record
        return None

    def _owner(self, row: Row) -> Message | None:
        values = self._values(row)
        self._require(values, row, "external_id")
        return OwnerRecord(**self._present(values), raw=row.as_dict() if self.keep_raw else None)

    def _account(self, row: Row) -> Message | None:
        values = self._values(row)
        self._require(values, row, "external_id")
        if "name" not in values:  # not mapped: the export names accounts by their id
            values["name"] = values["external_id"]
        if values.get("parent_external_id") == values["external_id"]:
            # An export that names an account as its own parent says it has none.
            values["parent_external_id"] = None
        return AccountRecord(
            **self._present(values),
            custom=self._custom(row),
            raw=row.as_dict() if self.keep_raw else None,
        )

    def _activity(self, row: Row) -> Message | None:
        values = self._values(row)
        self._require(values, row, "external_id", "type", "occurred_at")
        kind = values["type"]
        if ACTIVITY_TYPE.fullmatch(kind) is None:
            raise SkippableRecordError(
                f"{self.file.label} line {row.line}: type {kind!r} ({self._source('type')}) is not an "
                f"activity type: map the CRM's kinds onto {', '.join(ACTIVITY_TYPES)} or a lower-case "
                "name (fields.type.map)",
                field="type",
            )
        duration = values.get("duration_seconds")
        if duration is not None and duration < 0:
            raise SkippableRecordError(
                f"{self.file.label} line {row.line}: duration_seconds {duration} is negative "
                f"({self._source('duration_seconds')})",
                field="duration_seconds",
            )
        return ActivityRecord(
            **self._present(values),
            custom=self._custom(row),
            raw=row.as_dict() if self.keep_raw else None,
        )

    def _lead(self, row: Row) -> Message | None:
        values = self._values(row)
        self._require(values, row, "external_id")
        return LeadRecord(
            **self._present(values),
            custom=self._custom(row),
            raw=row.as_dict() if self.keep_raw else None,
        )

    def _opportunity(self, row: Row) -> Message | None:
        values = self._values(row)
        self._require(values, row, "external_id")
        if self.stages is not None:
            self.stages.classify(values, f"{self.file.label} line {row.line}")
        if values.get("is_won"):
            values["is_closed"] = True
        if not values.get("is_closed"):
            # An open deal's closing date is a forecast: close_date keeps it, closed_at is for
            # deals that did close.
            values["closed_at"] = None
        return OpportunityRecord(
            **self._present(values),
            custom=self._custom(row),
            raw=row.as_dict() if self.keep_raw else None,
        )

    def _stage_change(self, row: Row) -> Message | None:
        values = self._values(row)
        self._require(values, row, "opportunity_external_id", "to_stage", "changed_at")
        if values.get("external_id") is not None:
            self._check_id(values["external_id"], row)
        return StageChangeRecord(**self._present(values))

    def _pipeline_stage(self, row: Row) -> Message | None:
        values = self._values(row)
        self._require(values, row, "stage")
        values.setdefault("pipeline", None)
        values.setdefault("sort_order", None)
        if values["pipeline"] is None:
            values["pipeline"] = "default"
        if values["sort_order"] is None:
            values["sort_order"] = row.number
        return PipelineStageRecord(**self._present(values))


def join_columns(config: FileStream, alias: str) -> list[str]:
    """The columns of join ``alias``'s file that the stream's fields take, in first-use order."""
    out: list[str] = []
    for _, spec in config.field_specs():
        if spec.join == alias and spec.column is not None and spec.column not in out:
            out.append(spec.column)
    return out
