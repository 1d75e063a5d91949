"""The ``rest`` connector: reads the streams a spec declares, page by page, window by window.

Incremental streams read the window ``[since - lookback, until]`` with ``until`` fixed when the
read starts (the clock minus the spec's skew); the checkpoint after every page keeps the window
and the page position, so a crash resumes the same window where it stopped, and the last one
moves ``since`` to ``until``. Other streams checkpoint their page position and start over when
they end. Snapshot streams start over after a crash too, since their completeness is the point.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
from pydantic import Field, ValidationInfo, field_validator

from crm_perf_sync.connector_sdk import (
    Checkpoint,
    Connector,
    ConnectorConfigError,
    ConnectorContext,
    ConnectorSettings,
    Message,
    Pushable,
    PushedChange,
    PushRefused,
    PushRequest,
    SnapshotComplete,
    StreamSpec,
    StrictModel,
    Tombstone,
    parse_records,
)
from crm_perf_sync.connector_sdk.mapping import StageTable
from crm_perf_sync_rest import push
from crm_perf_sync_rest.client import Answer, Client, Prepared
from crm_perf_sync_rest.mapping import RecordMapper, check_zone, compile_path, parse_time
from crm_perf_sync_rest.spec import (
    Deletions,
    FieldSpec,
    Pagination,
    Push,
    RequestSpec,
    Spec,
    Stream,
    check_inputs,
    load_spec,
    shipped_specs,
)
from crm_perf_sync_rest.templates import Compiled, Table, Variables, compile_template

#: The stream that publishes a spec's stage table when the spec has no stage endpoint.
STAGE_TABLE_STREAM = "pipeline_stages"


class StreamSettings(StrictModel):
    """A connection's changes to one stream of its spec."""

    enabled: bool = True
    fields: dict[str, FieldSpec] = Field(
        default_factory=dict, description="field mappings replacing or adding to the spec's"
    )
    custom: dict[str, FieldSpec] = Field(default_factory=dict, description="custom dimensions to keep")
    stages: StageTable | None = Field(default=None, description="replaces the spec's stage table")
    snapshot: bool = Field(
        default=False,
        description=(
            "read the whole stream at every sync and delete the records it no longer returns (for an "
            "API with no deletion feed; a full read per sync, with the mass-deletion guard)"
        ),
    )


class RestSettings(ConnectorSettings):
    """Settings of a ``rest`` connection: the spec, the inputs it asks for, and changes to its streams."""

    spec: str = Field(description="a shipped spec's name (crm-perf-sync connectors list), or a YAML file")
    inputs: dict[str, Any] = Field(
        default_factory=dict, validate_default=True, description="credentials, ids, labels: see the spec"
    )
    base_url: str | None = Field(
        default=None, description="replaces the spec's base URL (a proxy, a test server)"
    )
    timezone: str | None = Field(
        default=None, description="the zone of date-times the API writes without one (default: the spec's)"
    )
    streams: dict[str, StreamSettings] = Field(default_factory=dict)
    requests_per_second: float | None = Field(
        default=None, ge=0, description="replaces the spec's pacing (a plan with a higher limit); 0: none"
    )

    @field_validator("spec")
    @classmethod
    def _spec_loads(cls, value: str) -> str:
        _load_for_settings(value)
        return value

    @field_validator("inputs")
    @classmethod
    def _inputs_fit_spec(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        reference = info.data.get("spec")
        if reference is not None:
            problems = check_inputs(_load_for_settings(reference), value)
            if problems:
                raise ValueError("; ".join(problems))
        return value

    @field_validator("streams")
    @classmethod
    def _streams_in_spec(
        cls, value: dict[str, StreamSettings], info: ValidationInfo
    ) -> dict[str, StreamSettings]:
        reference = info.data.get("spec")
        if reference is not None:
            spec = _load_for_settings(reference)
            for name in value:
                if name not in spec.streams:
                    known = ", ".join(spec.streams)
                    raise ValueError(
                        f"{name}: spec {spec.name} has no stream {name!r} (its streams: {known})"
                    )
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            check_zone(value)
        except ConnectorConfigError as exc:
            raise ValueError(str(exc).removeprefix("timezone: ")) from None
        return value


def _load_for_settings(reference: str) -> Spec:
    try:
        return load_spec(reference)
    except ConnectorConfigError as exc:
        raise ValueError(str(exc)) from None


class RestConnector(Connector[RestSettings], Pushable):
    settings_model = RestSettings
    description = "Any CRM with a REST API, its streams declared in a YAML spec (spec: <name or file>)"

    def __init__(
        self,
        settings: RestSettings,
        context: ConnectorContext,
        *,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(settings, context)
        spec = load_spec(settings.spec)
        if settings.requests_per_second is not None:
            pace = settings.requests_per_second or None
            spec = spec.model_copy(
                update={"limits": spec.limits.model_copy(update={"requests_per_second": pace})}
            )
        snapshots = {name for name, stream in settings.streams.items() if stream.snapshot}
        if snapshots:
            whole = Deletions(mode="snapshot")
            streams = {
                name: (
                    s.model_copy(update={"incremental": None, "deletions": whole}) if name in snapshots else s
                )
                for name, s in spec.streams.items()
            }
            spec = spec.model_copy(update={"streams": streams})
        self.spec = spec
        self.zone = check_zone(settings.timezone or self.spec.timezone)
        self.sleep = sleep
        self.transport = transport
        self.inputs = _resolve_inputs(self.spec, settings.inputs)
        self.variables: dict[str, Any] = {
            "inputs": Table(f"inputs of spec {self.spec.name}", self.inputs, "input")
        }
        self._client: Client | None = None
        self._lookups: dict[str, Table] | None = None
        self._mappers: dict[str, RecordMapper] = {}
        self._requests: dict[int, tuple[Compiled, RequestSpec]] = {}
        self._pushes: tuple[push.Verifier, Callable[[Any], Any], list[push.Rule]] | None = None

    @classmethod
    def presets(cls) -> Mapping[str, str]:
        """The shipped specs: ``spec: <name>`` in a connection's settings."""
        out = {}
        for name in shipped_specs():
            try:
                spec = load_spec(name)
            except ConnectorConfigError as exc:
                out[name] = f"(broken: {exc})"
                continue
            out[name] = f"{spec.title or name}: {', '.join(spec.streams)}"
        return out

    # -- the protocol -----------------------------------------------------------------------------------

    def streams(self) -> Sequence[StreamSpec]:
        out = []
        for name, stream in self.spec.streams.items():
            if not self._enabled(name):
                continue
            out.append(
                StreamSpec(
                    name=name,
                    entity=stream.entity,
                    cursor_field=stream.incremental.cursor if stream.incremental else None,
                    snapshot=stream.deletions.mode == "snapshot",
                )
            )
        if STAGE_TABLE_STREAM not in self.spec.streams and any(
            self._stage_table(name) is not None for name in self.spec.streams if self._enabled(name)
        ):
            out.insert(0, StreamSpec(name=STAGE_TABLE_STREAM, entity="pipeline_stages"))
        return out

    def read(self, stream: StreamSpec, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
        if stream.name == STAGE_TABLE_STREAM and STAGE_TABLE_STREAM not in self.spec.streams:
            for name in self.spec.streams:
                if self._enabled(name) and self._stage_table(name) is not None:
                    yield from self._mapper(name).pipeline_stages()
            yield Checkpoint({})
            return
        definition = self.spec.streams[stream.name]
        if definition.incremental is not None:
            yield from self._read_window(stream.name, definition, dict(checkpoint or {}))
        else:
            yield from self._read_whole(stream.name, definition, dict(checkpoint or {}))

    def check(self) -> None:
        self.lookups()
        name = next(iter(n for n in self.spec.streams if self._enabled(n)), None)
        if name is None:
            return
        definition = self.spec.streams[name]
        window = {"since": None, "until": self.context.clock()}
        variables = {**self.variables, "lookups": self.lookups(), "window": window}
        pages = self._pages(
            f"stream {name}", definition.request, definition.records, definition.pagination, variables, None
        )
        next(pages, None)
        pages.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def record_url(self, entity: str, external_id: str) -> str | None:
        template = self.spec.record_url.get(entity)
        if template is None:
            return None
        rendered = compile_template(template, f"record_url.{entity}")({**self.variables, "id": external_id})
        return None if rendered is None else str(rendered)

    # -- pushes ------------------------------------------------------------------------------------------

    def takes_pushes(self) -> bool:
        """Whether the spec describes the CRM's pushes (its ``push`` section)."""
        return self.spec.push is not None

    def verify_push(self, request: PushRequest) -> Sequence[PushedChange]:
        """The records a push announces, once its signature is verified (see :mod:`.push`): of
        the streams this connection reads, by the spec's ``push.changes`` rules."""
        spec = self.spec.push
        if spec is None:
            raise PushRefused(f"spec {self.spec.name} describes no pushes")
        if self._pushes is None:  # compiled once; a race compiles twice, harmlessly
            events = self._path(spec.events, "push.events", self.variables)
            self._pushes = (push.Verifier(spec, self.variables), events, self._push_rules(spec))
        verifier, select, rules = self._pushes
        seen = push.request_variables(request)
        delivery = verifier.verify(seen, self.context.clock())
        return push.changes_of(push.events_of(seen["body"], select), rules, delivery)

    def _push_rules(self, spec: Push) -> list[push.Rule]:
        enabled = {stream.name for stream in self.streams()}
        rules = []
        for number, change in enumerate(spec.changes):
            if change.stream not in enabled:
                continue  # a stream this connection does not read (its form not given, or disabled)
            where = f"push.changes[{number}]"
            occurred = (
                self._path(change.occurred, f"{where}.occurred", self.variables) if change.occurred else None
            )
            rules.append(
                push.Rule(
                    change.stream,
                    self._path(change.when, f"{where}.when", self.variables),
                    self._path(change.id, f"{where}.id", self.variables),
                    self._path(change.deleted, f"{where}.deleted", self.variables)
                    if change.deleted
                    else None,
                    self._instant_of(occurred, change.format) if occurred is not None else None,
                )
            )
        return rules

    def _instant_of(self, select: Callable[[Any], Any], fmt: str) -> Callable[[Any], datetime | None]:
        def instant(event: Any) -> datetime | None:
            value = select(event)
            if value is None or value == "":
                return None
            try:
                return parse_time(value, fmt, self.zone)
            except ValueError:
                return None  # when it changed is for the lag figure only: a push is not refused for it

        return instant

    def fetch(self, stream: StreamSpec, ids: Sequence[str]) -> Iterator[Message]:
        """The records of ``stream`` with these ids, read by the stream's ``fetch`` requests in
        batches (``ids`` among their variables, each after the first asked only for the ids not
        found yet); each id no request answers is a tombstone."""
        definition = self.spec.streams.get(stream.name)
        if definition is None or definition.fetch is None:
            raise ConnectorConfigError(
                f"spec {self.spec.name}: stream {stream.name!r} cannot be fetched by id"
            )
        fetching = definition.fetch
        mapper = self._mapper(stream.name)
        flag = (
            compile_path(definition.deletions.flag, f"streams.{stream.name}.deletions.flag")
            if definition.deletions.flag
            else None
        )
        wanted = list(dict.fromkeys(ids))
        for start in range(0, len(wanted), fetching.batch):
            batch = wanted[start : start + fetching.batch]
            found: set[str] = set()
            for number, step in enumerate([fetching, *fetching.then]):
                pending = [key for key in batch if key not in found]
                if not pending:
                    break
                variables = {
                    **self.variables,
                    "lookups": self.lookups(),
                    "window": {"since": None, "until": None},
                    "ids": pending,
                }
                what = f"stream {stream.name} fetch" + (f" (then[{number - 1}])" if number else "")
                for items, _ in self._pages(
                    what, step.request, step.records, step.pagination, variables, None
                ):
                    yield from self._map(mapper, items, flag, found)  # each id once, noted as found
            for gone in batch:
                if gone not in found:
                    yield Tombstone(gone)

    # -- reading ---------------------------------------------------------------------------------------------

    def _read_window(self, name: str, definition: Stream, state: dict[str, Any]) -> Iterator[Message]:
        incremental = definition.incremental
        assert incremental is not None
        since = _instant(state.get("since")) or (_instant(incremental.start) if incremental.start else None)
        until = _instant(state.get("until")) or (self.context.clock() - incremental.skew)
        query_since = since - incremental.lookback if since is not None else None
        window = {"since": query_since, "until": until}
        variables = {**self.variables, "lookups": self.lookups(), "window": window}
        base = {"since": _text(since), "until": _text(until)}
        phase = state.get("phase", "changes")
        if phase == "changes":
            for messages, position in self._mapped_pages(name, definition, variables, state.get("page")):
                yield from messages
                if position is not None:
                    yield Checkpoint({**base, "phase": "changes", "page": position})
            state = {}
        deletions = definition.deletions
        if deletions.mode == "endpoint":
            assert deletions.request is not None
            assert deletions.records is not None
            id_of = compile_path(deletions.id, f"streams.{name}.deletions.id")
            at_of = (
                compile_path(deletions.deleted_at, f"streams.{name}.deletions.deleted_at")
                if deletions.deleted_at
                else None
            )
            pages = self._pages(
                f"stream {name} deletions",
                deletions.request,
                deletions.records,
                deletions.pagination,
                variables,
                state.get("page") if phase == "deletions" else None,
            )
            for items, position in pages:
                for item in items:
                    key = id_of(item)
                    if key is None:
                        continue
                    deleted_at = None
                    if at_of is not None and at_of(item) is not None:
                        try:
                            deleted_at = parse_time(at_of(item), deletions.format, self.zone)
                        except ValueError:
                            deleted_at = None
                    yield Tombstone(str(key), deleted_at)
                if position is not None:
                    yield Checkpoint({**base, "phase": "deletions", "page": position})
        yield Checkpoint({"since": _text(until)})

    def _read_whole(self, name: str, definition: Stream, state: dict[str, Any]) -> Iterator[Message]:
        snapshot = definition.deletions.mode == "snapshot"
        variables = {**self.variables, "lookups": self.lookups(), "window": {"since": None, "until": None}}
        # A snapshot read is whole or it is not a snapshot: it never resumes part-way.
        start = None if snapshot else state.get("page")
        for messages, position in self._mapped_pages(name, definition, variables, start):
            yield from messages
            if position is not None:
                yield Checkpoint({} if snapshot else {"page": position})
        if snapshot:
            yield SnapshotComplete()
        yield Checkpoint({})

    def _mapped_pages(
        self, name: str, definition: Stream, variables: Variables, start: Mapping[str, Any] | None
    ) -> Iterator[tuple[list[Message], dict[str, Any] | None]]:
        """The stream's pages from ``start``, each as its messages and the next page's position."""
        mapper = self._mapper(name)
        flag = (
            compile_path(definition.deletions.flag, f"streams.{name}.deletions.flag")
            if definition.deletions.flag
            else None
        )
        seen: set[str] | None = set() if definition.distinct else None
        pages = self._pages(
            f"stream {name}",
            definition.request,
            definition.records,
            definition.pagination,
            variables,
            start,
            each=definition.each,
        )
        for items, position in pages:
            yield list(self._map(mapper, items, flag, seen)), position

    def _map(
        self,
        mapper: RecordMapper,
        items: list[Any],
        flag: Callable[[Any], Any] | None,
        seen: set[str] | None = None,
    ) -> Iterator[Message]:
        if seen is not None:
            # Records derived from others (the owners named on deals) come many times: once is enough.
            fresh = []
            for item in items:
                key = mapper.key(item)
                if key is None or key not in seen:
                    fresh.append(item)
                    if key is not None:
                        seen.add(key)
            items = fresh
        if flag is not None:
            live = []
            for item in items:
                if flag(item) in (True, 1, "true", "True", "1"):
                    key = mapper.key(item)
                    if key is not None:
                        yield Tombstone(key)
                else:
                    live.append(item)
            items = live
        yield from parse_records(items, mapper, key=mapper.key)

    # -- pages -----------------------------------------------------------------------------------------------

    def _pages(
        self,
        what: str,
        request: RequestSpec,
        records: str,
        pagination: Pagination,
        variables: Variables,
        position: Mapping[str, Any] | None,
        *,
        each: str | None = None,
    ) -> Generator[tuple[list[Any], dict[str, Any] | None]]:
        """The pages of ``request``: each page's records with the position of the next page
        (``None`` after the last one). ``position`` resumes from a checkpoint."""
        client = self.client()
        render = self._compiled(request, what)
        select = self._path(records, f"{what}: records", variables)
        nested = self._path(each, f"{what}: each", variables) if each else None
        next_of = compile_path(pagination.next, f"{what}: pagination.next") if pagination.next else None
        last_of = (
            compile_path(pagination.last_id, f"{what}: pagination.last_id") if pagination.last_id else None
        )
        more_of = (
            compile_path(pagination.has_more, f"{what}: pagination.has_more") if pagination.has_more else None
        )
        total_of = compile_path(pagination.total, f"{what}: pagination.total") if pagination.total else None
        page: dict[str, Any] = {
            "size": pagination.page_size,
            "cursor": None,
            "offset": 0,
            "number": pagination.start,
            "last_id": None,
            "url": None,
        }
        page.update(position or {})

        def fetch(where: Mapping[str, Any]) -> Answer:
            prepared = render({**variables, "page": dict(where)})
            if where["url"] is not None:
                prepared = Prepared(
                    prepared.method, where["url"], {}, prepared.headers, prepared.body, prepared.form
                )
            return client.send(prepared, what)

        # The next page is asked for while this one is mapped and stored: waiting on the network
        # overlaps the work. One request at a time all the same, in order, as the limits want.
        ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rest-{self.context.connection_id}")
        try:
            yield from self._walk(
                ahead, fetch, page, pagination, select, nested, next_of, last_of, more_of, total_of
            )
        finally:
            ahead.shutdown(wait=True, cancel_futures=True)

    def _walk(
        self,
        ahead: ThreadPoolExecutor,
        fetch: Callable[[Mapping[str, Any]], Answer],
        page: dict[str, Any],
        pagination: Pagination,
        select: Callable[[Any], Any],
        nested: Callable[[Any], Any] | None,
        next_of: Callable[[Any], Any] | None,
        last_of: Callable[[Any], Any] | None,
        more_of: Callable[[Any], Any] | None,
        total_of: Callable[[Any], Any] | None,
    ) -> Iterator[tuple[list[Any], dict[str, Any] | None]]:
        pages = 0
        pending: Future[Answer] = ahead.submit(fetch, dict(page))
        while True:
            answer = pending.result()
            pages += 1
            body = answer.body
            items = select(body) if body is not None else None
            if items is None:
                items = []
            elif not isinstance(items, list):
                items = [items]
            count = len(items)
            if nested is not None:
                items = [
                    {**child, "_parent": item} if isinstance(child, dict) else child
                    for item in items
                    for child in (nested(item) or [])
                ]
            following = self._following(pagination, page, answer, body, items, count, next_of, last_of)
            ended = following is None or count == 0
            if (
                not ended
                and more_of is not None
                and body is not None
                and more_of(body) in (False, "false", 0, None)
            ):
                ended = True
            if not ended and total_of is not None and body is not None:
                total = total_of(body)
                if isinstance(total, int) and following is not None and following.get("offset", 0) >= total:
                    ended = True
            if pagination.max_pages is not None and pages >= pagination.max_pages:
                ended = True
            if not ended:
                assert following is not None
                page.update(following)
                pending = ahead.submit(fetch, dict(page))
            yield items, (None if ended else following)
            if ended:
                return

    @staticmethod
    def _following(
        pagination: Pagination,
        page: Mapping[str, Any],
        answer: Any,
        body: Any,
        items: list[Any],
        count: int,
        next_of: Callable[[Any], Any] | None,
        last_of: Callable[[Any], Any] | None,
    ) -> dict[str, Any] | None:
        """Where the next page starts, or ``None`` when this one was the last."""
        kind = pagination.kind
        short = count < pagination.page_size and not pagination.short_pages
        if kind == "none":
            return None
        if kind == "cursor":
            token = next_of(body) if next_of is not None and body is not None else None
            if pagination.next_header is not None:
                token = answer.headers.get(pagination.next_header)
            return {"cursor": token} if token not in (None, "") else None
        if kind == "link":
            url = answer.next_link()
            return {"url": url} if url else None
        if short:
            return None
        if kind == "offset":
            return {"offset": int(page["offset"]) + count}
        if kind == "page":
            return {"number": int(page["number"]) + 1}
        assert last_of is not None
        last = last_of(items[-1]) if items else None
        return {"last_id": last} if last is not None else None

    # -- parts built once -------------------------------------------------------------------------------

    def client(self) -> Client:
        if self._client is None:
            base = self.settings.base_url or compile_template(self.spec.base_url, "base_url")(self.variables)
            self._client = Client(
                self.spec,
                str(base),
                self.variables,
                clock=self.context.clock,
                sleep=self.sleep,
                max_attempts=self.context.max_attempts,
                transport=self.transport,
            )
        return self._client

    def lookups(self) -> dict[str, Table]:
        """The spec's lookup tables, fetched once per connector (that is, per sync)."""
        if self._lookups is None:
            tables: dict[str, Table] = {}
            for name, lookup in self.spec.lookups.items():
                where = f"lookups.{name}"
                if not self._holds(lookup.when, f"{where}.when"):
                    # Its streams are not offered either: the input naming what it reads is not given.
                    tables[name] = Table(f"lookup {name}", {})
                    continue
                key_of = compile_path(lookup.key, f"{where}.key")
                value_of = compile_path(lookup.value, f"{where}.value")
                rows: dict[str, Any] = {}
                variables = {**self.variables, "lookups": tables, "window": {"since": None, "until": None}}
                for items, _ in self._pages(
                    f"lookup {name}", lookup.request, lookup.records, lookup.pagination, variables, None
                ):
                    for item in items:
                        key = key_of(item)
                        if key is not None:
                            rows.setdefault(str(key), value_of(item))
                tables[name] = Table(f"lookup {name}", rows)
            self._lookups = tables
        return self._lookups

    def _compiled(self, request: RequestSpec, what: str) -> Callable[[Variables], Prepared]:
        cached = self._requests.get(id(request))
        if cached is None:
            parts = compile_template(
                {
                    "path": request.path,
                    "query": request.query,
                    "headers": request.headers,
                    "body": request.body,
                    "form": request.form,
                },
                what,
            )
            cached = (parts, request)
            self._requests[id(request)] = cached
        parts = cached[0]
        method = request.method

        def render(variables: Variables) -> Prepared:
            rendered = parts(variables)
            headers = {key: str(value) for key, value in (rendered.get("headers") or {}).items()}
            return Prepared(
                method,
                str(rendered["path"]),
                rendered.get("query") or {},
                headers,
                rendered.get("body"),
                rendered.get("form"),
            )

        return render

    @staticmethod
    def _path(expression: str, where: str, variables: Variables) -> Callable[[Any], Any]:
        """A JMESPath expression, rendered first when it is a template (a field id found by label)."""
        if "{{" in expression:
            expression = str(compile_template(expression, where)(variables))
        return compile_path(expression, where)

    def _enabled(self, name: str) -> bool:
        override = self.settings.streams.get(name)
        if override is not None and not override.enabled:
            return False
        return self._holds(self.spec.streams[name].when, f"streams.{name}.when")

    def _holds(self, condition: str | None, where: str) -> bool:
        """Whether a ``when`` over the inputs is true (no ``when``: always)."""
        return condition is None or bool(compile_template(condition, where)(self.variables))

    def _stage_table(self, name: str) -> StageTable | None:
        override = self.settings.streams.get(name)
        if override is not None and override.stages is not None:
            return override.stages
        return self.spec.streams[name].stages

    def _mapper(self, name: str) -> RecordMapper:
        mapper = self._mappers.get(name)
        if mapper is None:
            definition = self.spec.streams[name]
            override = self.settings.streams.get(name)
            fields = dict(definition.fields)
            custom = dict(definition.custom)
            if override is not None:
                fields.update(override.fields)
                custom.update(override.custom)
            stream = definition.model_copy(update={"custom": custom, "stages": self._stage_table(name)})
            mapper = RecordMapper(
                name, stream, {**self.variables, "lookups": self.lookups()}, self.lookups(), self.zone, fields
            )
            self._mappers[name] = mapper
        return mapper


def _resolve_inputs(spec: Spec, given: Mapping[str, Any]) -> dict[str, Any]:
    """The connection's inputs with the spec's defaults, rendered in the order the spec lists them."""
    problems = check_inputs(spec, given)
    if problems:
        raise ConnectorConfigError("inputs: " + "; ".join(problems))
    resolved: dict[str, Any] = {}
    for key, definition in spec.inputs.items():
        if isinstance(given.get(key), dict) and isinstance(definition.default, dict):
            # A table of labels given in part keeps the spec's defaults for the rest.
            resolved[key] = {**definition.default, **given[key]}
        elif given.get(key) is not None:
            resolved[key] = given[key]
        elif definition.default is not None:
            resolved[key] = compile_template(definition.default, f"inputs.{key}.default")(
                {"inputs": Table(f"inputs of spec {spec.name}", resolved, "input")}
            )
        else:
            resolved[key] = None
    return resolved


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value)


def _text(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
