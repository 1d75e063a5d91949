"""A stream's mapping compiled once: one function from an API record (JSON) to a canonical record.

Paths are JMESPath; the common plain ones (``deal.owner.id``, ``_widget_1529400746031``) are
compiled to direct lookups, since a sync maps millions of records. Values are read with the SDK's
parsers (:mod:`crm_perf_sync.connector_sdk.values`), the same the csv connector uses, so
``"¥1,200.50"``, ``"2024-05-01"`` and ``"75%"`` mean the same in an export and in an API.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields as dataclass_fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jmespath
import jmespath.exceptions
from pydantic import TypeAdapter, ValidationError

from crm_perf_sync.connector_sdk import (
    ConnectorConfigError,
    Message,
    Scalar,
    SkippableRecordError,
    ensure_utc,
    values,
)
from crm_perf_sync.connector_sdk.mapping import StageClassifier, ValueMap
from crm_perf_sync.connector_sdk.records import RECORD_TYPES
from crm_perf_sync_rest.spec import FieldSpec, Stream
from crm_perf_sync_rest.templates import Table, Variables, compile_template, template_names

Getter = Callable[[Any], Any]

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Canonical fields and the type their value is read as; anything else is text.
_KINDS: Mapping[str, str] = {
    "amount": "decimal",
    "probability": "probability",
    "sort_order": "integer",
    "created_at": "datetime",
    "closed_at": "datetime",
    "converted_at": "datetime",
    "changed_at": "datetime",
    "remote_updated_at": "datetime",
    "occurred_at": "datetime",
    "close_date": "date",
    "duration_seconds": "duration",
    "is_closed": "boolean",
    "is_won": "boolean",
    "is_converted": "boolean",
    "is_deleted": "boolean",
    "is_completed": "boolean",
    "active": "boolean",
}
#: A duration written as a clock: ``H:MM`` or ``H:MM:SS`` (hours first, as Pipedrive writes them).
_CLOCK = re.compile(r"^(\d+):([0-5]\d)(?::([0-5]\d))?$")


def compile_path(expression: str, where: str) -> Getter:
    """A JMESPath expression as a function of a record; plain dotted names as direct lookups."""
    if _PLAIN.match(expression) and expression not in ("null", "true", "false"):
        keys = expression.split(".")
        if len(keys) == 1:
            key = keys[0]
            return lambda record: record.get(key) if isinstance(record, dict) else None

        def walk(record: Any) -> Any:
            for key in keys:
                if not isinstance(record, dict):
                    return None
                record = record.get(key)
            return record

        return walk
    try:
        compiled = jmespath.compile(expression)
    except jmespath.exceptions.ParseError as exc:
        raise ConnectorConfigError(f"{where}: {expression!r} is not a JMESPath expression: {exc}") from None
    return compiled.search


def time_parser(fmt: str, zone: ZoneInfo) -> Callable[[Any], datetime]:
    """How a JSON value becomes an aware datetime, by ``fmt``: iso, epoch_ms, epoch_s or a strptime
    format; naive text is read in ``zone``. Raises ``ValueError`` with the reason."""
    text_parser = values.datetime_parser((() if fmt == "iso" else (fmt,)), zone)
    divisor = 1 if fmt == "epoch_s" else 1000
    iso = fmt == "iso"

    def parse(value: Any) -> datetime:
        if isinstance(value, str):
            if iso:
                # Most APIs write UTC instants ("…T10:00:00.000Z"), each one different: read them
                # directly rather than through the cache the exports' repeated dates need.
                try:
                    moment = datetime.fromisoformat(value)
                except ValueError:
                    return text_parser(value.strip())  # says why it is not a date-time
                if moment.tzinfo is UTC:
                    return moment
                return ensure_utc(moment, assume=zone)
            return text_parser(value.strip())
        if isinstance(value, datetime):
            return ensure_utc(value, assume=zone)
        if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            return _EPOCH + timedelta(seconds=float(value) / divisor)
        raise ValueError(f"is a {type(value).__name__}, not a date-time")

    return parse


def parse_time(value: Any, fmt: str, zone: ZoneInfo) -> datetime:
    """One value read by :func:`time_parser` (for values read once, such as a cursor)."""
    return time_parser(fmt, zone)(value)


def _reader(kind: str, spec: FieldSpec, zone: ZoneInfo, where: str) -> Callable[[Any], Any]:
    """How a JSON value becomes the field's type; raises ValueError with the reason."""
    if kind == "decimal":
        text_amount = values.amount_parser(spec.decimal_separator, spec.thousands_separator)

        def amount(value: Any) -> Decimal:
            if isinstance(value, Decimal):
                return value
            if isinstance(value, int) and not isinstance(value, bool):
                return Decimal(value)
            if isinstance(value, float):
                return exact(value)
            if isinstance(value, str):
                return text_amount(value.strip())
            raise ValueError(f"is a {type(value).__name__}, not an amount")

        return amount
    if kind == "probability":
        divisor = Decimal(100) if spec.scale == "percent" else Decimal(1)
        text_probability = values.probability_parser(spec.scale)

        def probability(value: Any) -> float:
            if isinstance(value, str):
                return text_probability(value.strip())
            if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
                raise ValueError("is not a number")
            number = float(Decimal(str(value)) / divisor)
            if not 0.0 <= number <= 1.0:
                raise ValueError(f"is outside {'0-100' if spec.scale == 'percent' else '0-1'}")
            return number

        return probability
    if kind == "datetime":
        return time_parser(spec.format or "iso", zone)
    if kind == "date":
        fmt = spec.format or "iso"
        text_date = values.date_parser(() if fmt == "iso" else (fmt,))
        moment = time_parser(fmt, zone)

        def day(value: Any) -> date:
            if isinstance(value, str) and fmt == "iso":
                text = value.strip()
                if len(text) > 10:  # a date-time: its date where the business is
                    return moment(text).astimezone(zone).date()
                return text_date(text)
            if isinstance(value, str):
                return text_date(value.strip())
            return moment(value).astimezone(zone).date()

        return day
    if kind == "boolean":
        text_bool = values.bool_parser(spec.true_values, spec.false_values)

        def boolean(value: Any) -> bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, int):
                return value != 0
            return text_bool(str(value).strip())

        return boolean
    if kind == "integer":

        def integer(value: Any) -> int:
            if isinstance(value, bool):
                raise ValueError("is a boolean, not a whole number")
            if isinstance(value, int):
                return value
            if isinstance(value, Decimal | float) and value == int(value):
                return int(value)
            return values.integer(str(value).strip())

        return integer
    if kind == "duration":
        return _duration
    if kind == "number":
        as_decimal = _reader("decimal", spec, zone, where)
        return lambda value: float(as_decimal(value))
    if kind == "custom_decimal":
        as_decimal = _reader("decimal", spec, zone, where)
        return lambda value: str(as_decimal(value))
    if kind == "custom_date":
        as_date = _reader("date", spec, zone, where)
        return lambda value: as_date(value).isoformat()
    if kind == "custom_datetime":
        as_time = _reader("datetime", spec, zone, where)
        return lambda value: as_time(value).isoformat()

    return _text


#: The significant digits a binary float keeps of any decimal number written with no more.
FLOAT_DIGITS = 15


def exact(value: float) -> Decimal:
    """The Decimal a JSON number was written as, from the float it was read into: its shortest
    repr, which is the text itself for up to 15 significant digits. A longer number cannot be known
    from a float, so it is refused rather than rounded (an API should send such amounts as text)."""
    number = Decimal(repr(value))
    if not number.is_finite():
        raise ValueError("is not a finite number")
    if len(number.as_tuple().digits) > FLOAT_DIGITS:
        raise ValueError(
            f"has more than {FLOAT_DIGITS} significant digits, more than a JSON number keeps exactly "
            "(send it as text)"
        )
    return number


def _duration(value: Any) -> int:
    """Whole seconds from a number of seconds or a clock (``"01:30"``: an hour and a half)."""
    if isinstance(value, bool):
        raise ValueError("is a boolean, not a duration")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal | float) and value == int(value):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        clock = _CLOCK.match(text)
        if clock is not None:
            hours, minutes, secs = clock.groups()
            return int(hours) * 3600 + int(minutes) * 60 + int(secs or 0)
        if text.isdigit():
            return int(text)
    raise ValueError("is not a duration (whole seconds, H:MM or H:MM:SS)")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(exact(value))  # an id written as a long number is refused, not rounded
    if isinstance(value, int | Decimal):
        return str(value)
    raise ValueError(f"is a {type(value).__name__}, not text (point the path at one of its fields)")


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def compile_field(
    spec: FieldSpec,
    kind: str,
    where: str,
    variables: Variables,
    lookups: Mapping[str, Table],
    zone: ZoneInfo,
) -> Getter:
    """One field spec as a function of a record: its value in the field's type, or ``None``.

    Raises :class:`SkippableRecordError` for a value that cannot be read (or a required one that
    is missing), naming the field and the value.
    """
    if spec.timezone is not None:
        zone = check_zone(spec.timezone)
    if "value" in spec.model_fields_set:
        constant = spec.value
        if constant is None:
            return lambda _record: None
        parsed = _reader(kind, spec, zone, where)(constant)
        return lambda _record: parsed
    if spec.path is not None:
        expression = spec.path
        if "{{" in expression:
            expression = str(compile_template(expression, f"{where}.path")(variables))
        source = compile_path(expression, f"{where}.path")
        shown = expression
    else:
        assert spec.template is not None
        render = compile_template(spec.template, f"{where}.template")
        shown = spec.template
        if "record" not in template_names(spec.template):
            # Built from the inputs alone ("{{ inputs.currency }}"): the same for every record.
            fixed = render(variables)

            def source(record: Any) -> Any:  # noqa: ARG001 - the getters' signature
                return fixed

        else:

            def source(record: Any) -> Any:
                return render({**variables, "record": record})

    table_map = _value_map(spec.map, f"{where}.map", variables) if isinstance(spec.map, str) else spec.map
    mapping = {(k.casefold() if spec.ignore_case else k): v for k, v in table_map.items()}
    table = lookups[spec.lookup] if spec.lookup is not None else None
    read = _reader(kind, spec, zone, where)
    field = where.rsplit(".", 1)[-1]

    if not mapping and table is None and not spec.required:
        # Most fields: a value read as its type, nothing to translate. The commonest of all, a
        # top-level key holding text, is read inline: a sync maps millions of records.
        key = shown if spec.path is not None and _KEY.match(shown) else None
        if key is not None and read is _text:

            def plain_text(record: Any) -> Any:
                value = record.get(key) if type(record) is dict else None
                if type(value) is str:
                    return value.strip() or None
                if value is None or value == [] or value == {}:
                    return None
                try:
                    return _text(value)
                except ValueError as exc:
                    raise SkippableRecordError(f"{field}: {value!r} {exc} ({shown})", field=field) from None

            return plain_text

        def plain(record: Any) -> Any:
            value = source(record)
            if value is None or value == "" or value == [] or value == {}:
                return None
            try:
                return read(value)
            except ValueError as exc:
                raise SkippableRecordError(f"{field}: {value!r} {exc} ({shown})", field=field) from None

        return plain

    def get(record: Any) -> Any:
        value = source(record)
        if _empty(value):
            if spec.required:
                raise SkippableRecordError(f"{field} is empty ({shown})", field=field)
            return None
        if mapping:
            key = str(value) if not isinstance(value, str) else value
            key = key.casefold() if spec.ignore_case else key
            if key in mapping:
                value = mapping[key]
                if value is None:
                    return None
            elif spec.unmapped == "null":
                return None
            elif spec.unmapped == "error":
                raise SkippableRecordError(f"{field}: {value!r} is not in the map ({shown})", field=field)
        if table is not None:
            found = table.rows.get(str(value))
            if found is None:
                raise SkippableRecordError(
                    f"{field}: {value!r} is not in lookup {spec.lookup!r} ({shown})", field=field
                )
            value = found
        try:
            return read(value)
        except ValueError as exc:
            raise SkippableRecordError(f"{field}: {value!r} {exc} ({shown})", field=field) from None

    return get


_VALUE_MAP: TypeAdapter[dict[str, str | None]] = TypeAdapter(ValueMap)


def _value_map(template: str, where: str, variables: Variables) -> dict[str, str | None]:
    """A ``map`` given as a template: the table it renders to (an input of the connection's)."""
    rendered = compile_template(template, where)(variables)
    try:
        return _VALUE_MAP.validate_python(rendered if rendered is not None else {})
    except ValidationError as exc:
        problems = "; ".join(error["msg"] for error in exc.errors())
        raise ConnectorConfigError(f"{where}: {template!r} is not a table of values ({problems})") from None


class RecordMapper:
    """A stream's fields, custom dimensions and stage table as one function: API record → record."""

    def __init__(
        self,
        name: str,
        stream: Stream,
        variables: Variables,
        lookups: Mapping[str, Table],
        zone: ZoneInfo,
        fields: Mapping[str, FieldSpec] | None = None,
    ) -> None:
        self.name = name
        self.entity = stream.entity
        self.record_type = RECORD_TYPES[stream.entity]
        allowed = {f.name for f in dataclass_fields(self.record_type)} - {"raw", "custom"}
        where = f"streams.{name}"
        specs = dict(stream.fields if fields is None else fields)
        unknown = sorted(set(specs) - allowed)
        if unknown:
            raise ConnectorConfigError(
                f"{where}.fields: {', '.join(unknown)} not a field of {stream.entity} "
                f"(fields: {', '.join(sorted(allowed))})"
            )
        if "external_id" not in specs and stream.entity not in ("pipeline_stages", "stage_changes"):
            raise ConnectorConfigError(f"{where}.fields: external_id is not mapped")
        self.fields = [
            (
                key,
                compile_field(
                    spec, _KINDS.get(key, "string"), f"{where}.fields.{key}", variables, lookups, zone
                ),
            )
            for key, spec in specs.items()
        ]
        self.custom = [
            (
                key,
                compile_field(
                    spec,
                    _custom_kind(spec.type),
                    f"{where}.custom.{key}",
                    variables,
                    lookups,
                    zone,
                ),
            )
            for key, spec in stream.custom.items()
        ]
        if self.custom and "custom" not in {f.name for f in dataclass_fields(self.record_type)}:
            raise ConnectorConfigError(f"{where}.custom: {stream.entity} keep no custom dimensions")
        self.stages = StageClassifier(stream.stages, _shown(specs.get("stage"))) if stream.stages else None
        self.id_of = dict(self.fields).get("external_id")
        self.keep_raw = "raw" in {f.name for f in dataclass_fields(self.record_type)}

    def key(self, record: Any) -> str | None:
        """The record's id for a bad-record report, if it can be read."""
        if self.id_of is None:
            return None
        try:
            value = self.id_of(record)
        except SkippableRecordError:
            return None
        return None if value is None else str(value)

    def __call__(self, record: Any) -> Message:
        try:
            return self._map(record)
        except SkippableRecordError as exc:
            # Named by the record's id, so the report says which record of the CRM to fix.
            where = self.where(record)
            message = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
            raise SkippableRecordError(message, key=self.key(record), field=exc.field) from None

    def where(self, record: Any) -> str:
        """How a report names the record (the stream is named beside it): ``record 4711``."""
        return f"record {self.key(record)}"

    def _map(self, record: Any) -> Message:
        out: dict[str, Any] = {}
        for key, get in self.fields:
            value = get(record)
            if value is not None:
                out[key] = value
        if self.stages is not None:
            self.stages.classify(out, self.where(record))
        if out.get("is_won"):
            out["is_closed"] = True
        if self.entity == "opportunities" and not out.get("is_closed"):
            # An open deal's close date is a forecast, not the time it closed.
            out.pop("closed_at", None)
        if self.custom:
            custom: dict[str, Scalar] = {}
            for key, get in self.custom:
                custom[key] = get(record)
            out["custom"] = custom
        if self.keep_raw and isinstance(record, dict):
            # A record found inside another (each:) keeps its own payload, not its parent's.
            out["raw"] = (
                {k: v for k, v in record.items() if k != "_parent"} if "_parent" in record else record
            )
        if "external_id" in out:
            out["external_id"] = str(out["external_id"])
        try:
            return self.record_type(**out)  # type: ignore[no-any-return]
        except TypeError as exc:
            raise SkippableRecordError(str(exc)) from None

    def pipeline_stages(self) -> Iterator[Message]:
        """The stage table as pipeline stage records (for a spec whose API has no stage endpoint)."""
        if self.stages is not None:
            yield from self.stages.records()


def _custom_kind(kind: str | None) -> str:
    return {
        None: "string",
        "string": "string",
        "integer": "integer",
        "number": "number",
        "decimal": "custom_decimal",
        "boolean": "boolean",
        "date": "custom_date",
        "datetime": "custom_datetime",
    }[kind]


def _shown(spec: FieldSpec | None) -> str:
    if spec is None:
        return "not mapped"
    return spec.path or spec.template or "a constant"


def check_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConnectorConfigError(f"timezone: unknown IANA timezone {name!r}") from None
