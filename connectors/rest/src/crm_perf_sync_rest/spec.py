"""The spec: a CRM's REST API described in YAML, stream by stream.

A spec is data, never code: its requests are templates rendered in a sandbox
(:mod:`crm_perf_sync_rest.templates`), its selectors JMESPath expressions. It is loaded once per
connection (shipped specs by name from ``specs/``, or a file of the user's), validated here with
every problem reported as ``file:line: key: message``.

The shape (``docs/connectors/rest.md`` walks through it)::

    name: jiandaoyun
    title: 简道云 Jiandaoyun
    docs: [https://hc.jiandaoyun.com/open/...]   # the vendor pages the spec follows
    base_url: https://api.jiandaoyun.com          # a template: "https://www.zohoapis.{{ inputs.dc }}"
    inputs:                                      # what a connection gives (credentials, ids, labels)
      api_key: {required: true, secret: true, description: ...}
    auth: {type: bearer, token: "{{ inputs.api_key }}"}
    limits: {requests_per_second: 5}
    errors: {code: code, message: msg, success: [0], rules: [{code: 8303, action: retry}]}
    lookups:                                     # tables fetched before the streams: label → id ...
      widgets: {request: {...}, records: widgets, key: label, value: name}
    streams:
      opportunities:
        entity: opportunities
        request: {method: POST, path: /api/v5/app/entry/data/list, body: {...}}
        records: data
        pagination: {kind: keyset, page_size: 100, last_id: _id}
        incremental: {cursor: updateTime, lookback: 5m}
        fields: {external_id: _id, amount: {path: "{{ lookups.widgets['金额'] }}"}}
        stages: {pipeline: jiandaoyun, table: [...]}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from crm_perf_sync.connector_sdk import (
    ConfigIssues,
    ConnectorConfigError,
    Duration,
    Entity,
    StrictModel,
    load_yaml,
    pydantic_issues,
)
from crm_perf_sync.connector_sdk.mapping import StageTable, TextList, ValueMap

Template = str  # a Jinja expression or text, rendered in the sandbox
JMESPath = str  # a JMESPath expression (or a template rendering to one)

SPEC_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
SHIPPED = "crm_perf_sync_rest.specs"


# --- inputs --------------------------------------------------------------------------------------


class InputDef(StrictModel):
    """One value a connection gives the spec: a credential, an id, a table of labels."""

    description: str = ""
    type: Literal["string", "integer", "number", "boolean", "mapping", "list"] = "string"
    required: bool = False
    secret: bool = Field(default=False, description="never shown in messages or logs")
    default: Any = Field(default=None, description="a value, or a template over the inputs before it")
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _required_has_no_default(self) -> Self:
        if self.required and self.default is not None:
            raise ValueError("a required input has no default")
        return self


# --- auth ----------------------------------------------------------------------------------------


class OAuth2Refresh(StrictModel):
    """OAuth 2.0 with a refresh token: an access token from ``token_url``, renewed before it expires
    (``expires_in``, or ``default_ttl`` when the answer has none) and once on a 401."""

    token_url: Template
    client_id: Template
    client_secret: Template
    refresh_token: Template
    params_in: Literal["form", "query"] = Field(
        default="form", description="where the token request carries the credentials"
    )
    client_auth: Literal["form", "basic"] = Field(
        default="form",
        description="the client's id and secret with the other parameters, or in a Basic header",
    )
    scheme: str = Field(default="Bearer", description="the Authorization scheme: Bearer, Zoho-oauthtoken ...")
    default_ttl: Duration = timedelta(hours=1)
    renew_before: Duration = timedelta(minutes=1)
    base_url_from: JMESPath | None = Field(
        default=None, description="a field of the token answer naming the API's base URL (api_domain)"
    )


class Auth(StrictModel):
    """How requests authenticate.

    ``bearer``: ``Authorization: Bearer <token>``; ``header``, ``query``, ``body``: ``name`` set to
    ``value`` in the headers, the query or the JSON body; ``basic``: ``username`` and ``password``;
    ``oauth2_refresh``: see :class:`OAuth2Refresh`; ``none``.
    """

    type: Literal["none", "bearer", "header", "query", "body", "basic", "oauth2_refresh"]
    when: Template | None = Field(
        default=None, description="with several ways to sign in: this one when the template is true"
    )
    token: Template | None = None
    name: str | None = None
    value: Template | None = None
    username: Template | None = None
    password: Template | None = None
    oauth2: OAuth2Refresh | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        needs: dict[str, tuple[str, ...]] = {
            "bearer": ("token",),
            "header": ("name", "value"),
            "query": ("name", "value"),
            "body": ("name", "value"),
            "basic": ("username", "password"),
            "oauth2_refresh": ("oauth2",),
            "none": (),
        }
        missing = [key for key in needs[self.type] if getattr(self, key) is None]
        if missing:
            raise ValueError(f"auth type {self.type} needs {', '.join(missing)}")
        extra = [
            key
            for key in ("token", "name", "value", "username", "password", "oauth2")
            if key not in needs[self.type] and getattr(self, key) is not None
        ]
        if extra:
            raise ValueError(f"auth type {self.type} does not use {', '.join(extra)}")
        return self


# --- requests, records, pages ---------------------------------------------------------------------


class RequestSpec(StrictModel):
    """One HTTP request, every string a template. A value rendering to null is left out."""

    method: Literal["GET", "POST", "PUT"] = "GET"
    path: Template = Field(min_length=1, description="below base_url, or a whole URL")
    query: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, Template] = Field(default_factory=dict)
    body: Any = Field(default=None, description="a JSON body (POST, PUT)")
    form: dict[str, Any] | None = Field(default=None, description="a form body instead of JSON")

    @model_validator(mode="after")
    def _one_body(self) -> Self:
        if self.body is not None and self.form is not None:
            raise ValueError("give either body (JSON) or form, not both")
        return self


class Pagination(StrictModel):
    """How the pages of a request follow each other.

    The templates see ``page``: ``page.size``; ``page.cursor`` (kind ``cursor``: the token the last
    answer gave, ``None`` at first); ``page.offset`` (``offset``); ``page.number`` (``page``,
    counting from ``start``); ``page.last_id`` (``keyset``: ``last_id`` of the last record);
    kind ``link`` follows the ``Link: <…>; rel="next"`` header's URL as it is.

    A read ends on an empty page, a page shorter than ``page_size`` (unless ``short_pages``),
    ``has_more`` false, no next cursor or link, or ``total`` reached.
    """

    kind: Literal["none", "cursor", "offset", "page", "keyset", "link"] = "none"
    page_size: int = Field(default=100, ge=1, le=100_000)
    next: JMESPath | None = Field(
        default=None, description="cursor: where the answer's body gives the next token"
    )
    next_header: str | None = Field(default=None, description="cursor: a header giving the next token")
    last_id: JMESPath | None = Field(default=None, description="keyset: the id of a record to continue after")
    start: int = Field(default=1, ge=0, description="page: the first page's number")
    has_more: JMESPath | None = Field(default=None, description="a flag in the body: false on the last page")
    total: JMESPath | None = Field(default=None, description="the number of records in all pages")
    short_pages: bool = Field(
        default=False, description="the API may answer fewer than page_size records before the end"
    )
    max_pages: int | None = Field(default=None, ge=1, description="stop after this many pages (a safety net)")

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.kind == "cursor" and (self.next is None) == (self.next_header is None):
            raise ValueError("a cursor pagination gives exactly one of next (body) or next_header")
        if self.kind == "keyset" and self.last_id is None:
            raise ValueError("a keyset pagination needs last_id: the field to continue after")
        return self


# --- errors and limits -------------------------------------------------------------------------------

Action = Literal["ok", "retry", "quota", "fatal", "config"]


def _ints(value: object) -> object:
    if isinstance(value, int | str) and not isinstance(value, bool):
        return [value]
    return value


class ErrorRule(StrictModel):
    """What an answer means: matched by HTTP status (``429``, ``"5xx"``) and/or the body's code."""

    status: Annotated[list[int | str], BeforeValidator(_ints)] = Field(default_factory=list)
    code: Annotated[list[int | str], BeforeValidator(_ints)] = Field(default_factory=list)
    action: Action
    message: str | None = Field(default=None, description="what to tell the user (how to fix it)")

    @field_validator("status")
    @classmethod
    def _statuses(cls, value: list[int | str]) -> list[int | str]:
        for item in value:
            if isinstance(item, str) and not re.fullmatch(r"[1-5]xx", item):
                raise ValueError(f"a status is a number or a class like 5xx, got {item!r}")
        return value

    @model_validator(mode="after")
    def _matches_something(self) -> Self:
        if not self.status and not self.code:
            raise ValueError("a rule matches a status, a code, or both")
        return self

    def matches(self, status: int, code: object) -> bool:
        if self.status and not any(
            item == status or (isinstance(item, str) and str(status)[0] == item[0]) for item in self.status
        ):
            return False
        return not self.code or (code is not None and any(str(item) == str(code) for item in self.code))


class Errors(StrictModel):
    """Errors reported in a body (``{"code": 8303, "msg": …}``, also under a 200) and what each means.

    A body whose ``code`` is present and not in ``success`` is an error. The first matching rule
    decides; without one: 429, 408 and 5xx are retried, 401 and 403 are fatal (credentials), other
    4xx are configuration errors, and a body code under a 2xx is fatal.
    """

    code: JMESPath | None = None
    message: JMESPath | None = None
    success: Annotated[list[int | str], BeforeValidator(_ints)] = Field(
        default_factory=lambda: list[int | str]([0])
    )
    rules: list[ErrorRule] = Field(default_factory=list)


class RateHeaders(StrictModel):
    """A vendor's rate-limit headers: when ``remaining`` reaches 0, wait ``reset`` before the next call."""

    remaining: str
    reset: str | None = None
    reset_kind: Literal["seconds", "epoch"] = "seconds"
    daily_remaining: str | None = Field(default=None, description="0 here stops the run until tomorrow")


class Limits(StrictModel):
    """How fast the connector may ask, and how patiently it retries."""

    requests_per_second: float | None = Field(default=None, gt=0)
    requests_per_day: int | None = Field(default=None, ge=1)
    headers: RateHeaders | None = None
    retry_after: str = Field(default="Retry-After", description="the header telling how long to wait")
    max_attempts: int = Field(default=6, ge=1, le=20)
    max_wait: Duration = Field(
        default=timedelta(minutes=5),
        description="a server asking to wait longer (a daily budget spent) stops the run until then",
    )
    backoff_base: Duration = timedelta(seconds=1)
    backoff_cap: Duration = timedelta(seconds=60)
    timeout: Duration = timedelta(seconds=60)


# --- incremental, deletions ----------------------------------------------------------------------------

TimeFormat = str  # "iso", "epoch_ms", "epoch_s", or a strptime format


class Incremental(StrictModel):
    """Follow changes by a modified-time ``cursor``: each read asks for the window
    ``[since - lookback, until]`` (``until``: the read's start minus ``skew``) and the next read
    starts at ``until``. The lower bound is closed and looks back, so records sharing a timestamp
    (or written while the last read ran) are read again, never skipped: the store upserts.

    The request templates see ``window.since`` (``None`` on a first or full read) and
    ``window.until`` as aware datetimes, with filters such as ``iso``, ``epoch_ms`` and
    ``http_date`` to write them.
    """

    cursor: JMESPath = Field(description="the record's modified time")
    format: TimeFormat = "iso"
    lookback: Duration = timedelta(minutes=5)
    skew: Duration = timedelta(seconds=0)
    start: str | None = Field(default=None, description="ISO date-time a first read starts at (default: all)")


class Deletions(StrictModel):
    """How deletions are found.

    ``flag``: a record whose ``flag`` is true is deleted; ``endpoint``: a request listing deleted
    records (``id`` of each, optionally ``deleted_at``), read after the changes with the same
    window; ``snapshot``: every read is whole and the records it does not return are deleted (with
    the engine's mass-deletion guard); ``none``: the API cannot tell.
    """

    mode: Literal["none", "flag", "endpoint", "snapshot"] = "none"
    flag: JMESPath | None = None
    request: RequestSpec | None = None
    records: JMESPath | None = None
    pagination: Pagination = Field(default_factory=Pagination)
    id: JMESPath = "id"
    deleted_at: JMESPath | None = None
    format: TimeFormat = "iso"

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.mode == "flag" and self.flag is None:
            raise ValueError("deletions by flag need flag: the field that marks a deleted record")
        if self.mode == "endpoint" and (self.request is None or self.records is None):
            raise ValueError("deletions from an endpoint need request and records")
        return self


# --- mapping ---------------------------------------------------------------------------------------------


class FieldSpec(StrictModel):
    """Where a canonical field's value comes from, and how it is read.

    Exactly one of ``path`` (JMESPath into the record; a template around it is rendered once with
    the inputs and lookups, so a label can name a field: ``"{{ lookups.widgets['金额'] }}"``),
    ``template`` (text built from the record: ``"team:{{ record.dept }}"``) or ``value`` (a
    constant). A YAML string is shorthand for ``{path: …}``.

    The value found is translated by ``map`` (a table, or a template over the inputs rendering to
    one; then ``unmapped``: keep, null or error), looked up in
    a ``lookup`` table (an id → its name), then read as the canonical field's type: numbers and
    text amounts (``"¥1,200.50"``, with ``decimal_separator``), dates and times (``format``: iso,
    epoch_ms, epoch_s or strptime; naive ones in ``timezone``), probabilities (``scale``), yes/no.
    """

    path: JMESPath | None = None
    template: Template | None = None
    value: Any = None
    map: ValueMap | Template = Field(
        default_factory=dict,
        description="value → canonical value; or a template naming an input that holds the table, "
        'so a connection can add its own values ("{{ inputs.activity_types }}")',
    )
    ignore_case: bool = False
    unmapped: Literal["keep", "null", "error"] = "keep"
    lookup: str | None = Field(default=None, description="a lookup table translating the value")
    required: bool = False
    format: TimeFormat | None = None
    timezone: str | None = None
    scale: Literal["fraction", "percent"] = "fraction"
    decimal_separator: Literal[".", ","] = "."
    thousands_separator: Literal[",", ".", " ", "'", ""] = ","
    true_values: TextList = ("true", "yes", "y", "1", "t")
    false_values: TextList = ("false", "no", "n", "0", "f")
    type: Literal["string", "integer", "number", "decimal", "boolean", "date", "datetime"] | None = Field(
        default=None, description="custom dimensions only: the value's type"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: object) -> object:
        return {"path": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [name for name in ("path", "template") if getattr(self, name) is not None]
        if "value" in self.model_fields_set:
            given.append("value")
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of path, template or value (got {', '.join(given) or 'none'})"
            )
        return self


class FetchStep(StrictModel):
    """One request of a fetch by id (``ids``, the batch's ids not found yet, among its variables)."""

    request: RequestSpec
    records: JMESPath
    pagination: Pagination = Field(default_factory=Pagination)


class Fetch(FetchStep):
    """How to read a stream's records by id, for a targeted sync of what a push announced: the
    request (with ``ids``, a batch of ids, among its variables) and where its records are, then
    each of ``then`` for the ids not found yet (a CRM that keeps some records in a list of their
    own, such as Pipedrive's archived deals). An id no request answers is gone from the CRM."""

    then: list[FetchStep] = Field(default_factory=list)
    batch: int = Field(default=100, ge=1, le=1000, description="ids per request")


class Stream(StrictModel):
    """One stream: a request, its pages, its records, their mapping."""

    entity: Entity
    when: Template | None = Field(
        default=None,
        description="offered only when the template over the inputs is true (a form's id was given)",
    )
    request: RequestSpec
    records: JMESPath = Field(description="where the records are in an answer ('@' for a bare list)")
    pagination: Pagination = Field(default_factory=Pagination)
    incremental: Incremental | None = None
    deletions: Deletions = Field(default_factory=Deletions)
    fields: dict[str, FieldSpec]
    custom: dict[str, FieldSpec] = Field(default_factory=dict)
    stages: StageTable | None = None
    fetch: Fetch | None = Field(default=None, description="reading records by id (what a push names)")
    each: JMESPath | None = Field(
        default=None, description="records nested in each selected item (stages inside pipelines)"
    )
    distinct: bool = Field(
        default=False, description="yield each id once per read (records derived from others, such as owners)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.deletions.mode == "snapshot" and self.incremental is not None:
            raise ValueError(
                "a snapshot stream is read whole every time: drop incremental, or choose another mode"
            )
        if self.stages is not None and self.entity != "opportunities":
            raise ValueError("stages classify opportunities only")
        return self


class Lookup(StrictModel):
    """A table fetched before the streams: ``key`` → ``value`` of every record of ``request``
    (only ``when`` the template over the inputs is true, if it is given)."""

    when: Template | None = None
    request: RequestSpec
    records: JMESPath
    pagination: Pagination = Field(default_factory=Pagination)
    key: JMESPath
    value: JMESPath


class PushSignature(StrictModel):
    """A push signed by the CRM: a digest, over parts of the request and the connection's secret,
    that the request carries."""

    algorithm: Literal["sha1", "sha256", "hmac-sha1", "hmac-sha256"] = Field(
        description="a plain digest of the message (the secret inside it) or an HMAC keyed by the secret"
    )
    encoding: Literal["hex", "base64"] = "hex"
    message: Template = Field(description="what is digested")
    signature: Template = Field(description="the signature the request carries")


class PushBasicAuth(StrictModel):
    """A push that signs in with HTTP basic authentication: this user name, the secret as password."""

    username: Template


class PushChange(StrictModel):
    """Which records of which stream one event of a push announces (the first rule that holds)."""

    stream: str
    when: JMESPath = Field(description="over the event: this rule's events")
    id: JMESPath = Field(description="over the event: the record's id, or a list of ids")
    deleted: JMESPath | None = Field(default=None, description="over the event: true when it was deleted")
    occurred: JMESPath | None = Field(default=None, description="over the event: when the record changed")
    format: TimeFormat = "iso"


class Push(StrictModel):
    """The CRM's pushes to ``/api/v1/ingest/<connection>``: how they are verified and read.

    Templates see ``request``: ``method``, ``url``, ``query``, ``headers`` (lower-case names),
    ``body`` (text) and ``json`` (the body parsed, or none), and ``secret`` where it goes into a
    signature. A push proves itself in one of three ways: a ``signature``, ``basic_auth``, or a
    ``token`` the CRM echoes (compared with the secret); each in constant time, with the current
    secret and the previous one."""

    docs: list[str] = Field(default_factory=list)
    secret: Template = Field(description="the connection's push secret (an input)")
    previous_secret: Template | None = Field(
        default=None, description="the secret before a rotation, accepted until every push uses the new one"
    )
    signature: PushSignature | None = None
    basic_auth: PushBasicAuth | None = None
    token: Template | None = Field(default=None, description="where the request carries the secret back")
    timestamp: Template | None = Field(
        default=None, description="when the CRM sent it: outside the window, refused (a replay)"
    )
    timestamp_unit: Literal["s", "ms"] = "s"
    window: Duration = timedelta(minutes=5)
    delivery: Template | None = Field(
        default=None, description="the push's delivery id, the same when the CRM sends it again"
    )
    events: JMESPath = Field(default="[@]", description="over the body (JSON): its events")
    changes: list[PushChange] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_proof(self) -> Self:
        given = [name for name in ("signature", "basic_auth", "token") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "a push is verified by exactly one of signature, basic_auth, token "
                f"(given: {', '.join(given) or 'none'})"
            )
        return self


class Spec(StrictModel):
    name: str
    title: str | None = None
    description: str = ""
    docs: list[str] = Field(default_factory=list, description="the vendor documentation the spec follows")
    base_url: Template
    timezone: str = Field(default="UTC", description="the zone of date-times the API writes without one")
    inputs: dict[str, InputDef] = Field(default_factory=dict)
    auth: Auth | list[Auth] = Field(
        default_factory=lambda: Auth(type="none"),
        description="how to sign in, or several ways, each with a `when`, the first that holds used",
    )
    limits: Limits = Field(default_factory=Limits)
    errors: Errors = Field(default_factory=Errors)
    record_url: dict[str, Template] = Field(
        default_factory=dict, description="per entity: the record's page in the CRM ({{ id }})"
    )
    lookups: dict[str, Lookup] = Field(default_factory=dict)
    streams: dict[str, Stream] = Field(min_length=1)
    push: Push | None = Field(default=None, description="the CRM's pushes, if it sends them")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SPEC_NAME.match(value):
            raise ValueError(f"a spec name is lower-case letters, digits and _, got {value!r}")
        return value

    @model_validator(mode="after")
    def _references(self) -> Self:
        for name, stream in self.streams.items():
            for key, spec in (*stream.fields.items(), *stream.custom.items()):
                if spec.lookup is not None and spec.lookup not in self.lookups:
                    known = ", ".join(sorted(self.lookups)) or "none"
                    raise ValueError(
                        f"streams.{name}.fields.{key}.lookup: no lookup {spec.lookup!r} ({known})"
                    )
        for number, change in enumerate(self.push.changes if self.push else ()):
            target = self.streams.get(change.stream)
            if target is None:
                raise ValueError(f"push.changes[{number}].stream: no stream {change.stream!r}")
            if target.fetch is None:
                raise ValueError(
                    f"push.changes[{number}].stream: stream {change.stream!r} has no fetch "
                    "(a pushed change is read from the CRM by id)"
                )
        return self


# --- loading -----------------------------------------------------------------------------------------------


def shipped_specs() -> list[str]:
    """The names of the specs shipped with the connector."""
    folder = resources.files(SHIPPED)
    return sorted(item.name.removesuffix(".yaml") for item in folder.iterdir() if item.name.endswith(".yaml"))


def spec_path(reference: str) -> Path:
    """The file a connection's ``spec`` names: a shipped spec's name, or a path to a YAML file."""
    if SPEC_NAME.match(reference):
        candidate = resources.files(SHIPPED) / f"{reference}.yaml"
        if not candidate.is_file():
            shipped = ", ".join(shipped_specs())
            raise ConnectorConfigError(
                f"no shipped spec named {reference!r} (shipped: {shipped}); give a path to your own spec file"
            )
        return Path(str(candidate))
    path = Path(reference)
    if not path.is_file():
        raise ConnectorConfigError(f"spec file {reference} not found (relative to {Path.cwd()})")
    return path


@lru_cache(maxsize=32)
def _load(path: Path, mtime_ns: int) -> Spec:  # noqa: ARG001 - part of the cache key
    # ${VAR} is not interpolated in a spec: its values come from the connection's inputs.
    raw, source = load_yaml(path, env={})
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigIssues(pydantic_issues(source, (), exc)) from None


def load_spec(reference: str) -> Spec:
    """The spec ``reference`` names, validated; :class:`ConnectorConfigError` listing every problem
    (``file:line: key: message``) when it is not valid."""
    path = spec_path(reference)
    try:
        return _load(path.resolve(), path.stat().st_mtime_ns)
    except ConfigIssues as exc:
        raise ConnectorConfigError("\n".join(issue.render() for issue in exc.issues)) from None


def check_inputs(spec: Spec, given: Mapping[str, Any]) -> list[str]:
    """What is wrong with a connection's ``inputs`` for ``spec``: ``"key: message"`` each."""
    problems = []
    for key in given:
        if key not in spec.inputs:
            known = ", ".join(sorted(spec.inputs)) or "none"
            problems.append(f"{key}: spec {spec.name} has no input {key!r} (its inputs: {known})")
    kinds: dict[str, tuple[type, ...]] = {
        "string": (str,),
        "integer": (int,),
        "number": (int, float, Decimal),
        "boolean": (bool,),
        "mapping": (dict,),
        "list": (list,),
    }
    for key, definition in spec.inputs.items():
        value = given.get(key)
        if value is None:
            if definition.required:
                what = f" ({definition.description})" if definition.description else ""
                problems.append(f"{key}: required by spec {spec.name}{what}")
            continue
        expected = kinds[definition.type]
        if (isinstance(value, bool) and bool not in expected) or not isinstance(value, expected):
            problems.append(f"{key}: expected a {definition.type}, got {type(value).__name__}")
        elif definition.choices is not None and value not in definition.choices:
            choices = ", ".join(str(choice) for choice in definition.choices)
            problems.append(f"{key}: {value!r} is not one of {choices}")
    return problems
