"""The ``csv`` connector: CRM exports (CSV files) mapped onto canonical records by configuration.

Each configured stream reads one file. A read first fingerprints the file (sha256 of its bytes)
and the inputs that shape its records (the stream's mapping, the joined files), then streams the
rows and yields a checkpoint every ``batch_size`` rows: ``{file, sha256, inputs, row, done}``.

- Same fingerprint, ``done``: nothing changed since the last complete read; only the checkpoint
  is yielded again.
- Same fingerprint, not done: the read resumes after ``row``.
- Anything else (a new export, another mapping): the file is read from the start, and after the
  last record :class:`SnapshotComplete` tells the engine that the file is the whole truth, so it
  soft-deletes the records the export no longer has. A resumed read never says so.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

from crm_perf_sync.connector_sdk import (
    Checkpoint,
    Connector,
    ConnectorConfigError,
    ConnectorContext,
    Entity,
    Message,
    RetriableError,
    SnapshotComplete,
    StreamSpec,
)
from crm_perf_sync.connector_sdk.mapping import StageClassifier, StageTable
from crm_perf_sync_csv.files import BrokenRow, CsvFile, CsvReader, fingerprint
from crm_perf_sync_csv.mapping import Header, JoinTable, Row, StreamMapper, join_columns
from crm_perf_sync_csv.settings import CsvSettings, FileStream

#: Part of every fingerprint: bump it when the same file and settings map to different records,
#: so that checkpoints written by an older version trigger a full re-read.
#: 2: broken rows (short, blank between data rows, broken quoting) are bad records, counted as rows.
FORMAT_VERSION = 2

_ORDER: tuple[Entity, ...] = (
    "teams",
    "owners",
    "pipeline_stages",
    "accounts",
    "leads",
    "opportunities",
    "activities",
    "stage_changes",
)
_SAMPLE = Path(__file__).resolve().parent / "sample"


class CsvConnector(Connector[CsvSettings]):
    """Imports any CRM export through the column mapping in its settings (see :mod:`.settings`)."""

    settings_model = CsvSettings
    description = "CRM exports as CSV files, mapped column by column in the configuration"
    #: A small synthetic export shipped with the package, so the connector runs self-contained.
    example_settings: ClassVar[Mapping[str, Any] | None] = {
        "data_dir": str(_SAMPLE),
        "streams": {
            "teams": {
                "file": "reps.csv",
                "levels": [
                    {"level": "region", "external_id": {"template": "region:{region}"}, "name": "region"},
                    {"level": "team", "external_id": {"template": "team:{team}"}, "name": "team"},
                ],
            },
            "owners": {
                "file": "reps.csv",
                "fields": {
                    "external_id": "user_id",
                    "name": "full_name",
                    "email": "email",
                    "team_external_id": {"template": "team:{team}"},
                },
            },
            "leads": {
                "file": "leads.csv",
                "fields": {
                    "external_id": "lead_id",
                    "owner_external_id": "owner_id",
                    "company": "company",
                    "source": {"column": "source", "map": {"web": "Web"}, "ignore_case": True},
                    "created_at": {"column": "created", "format": "%Y-%m-%d %H:%M"},
                    "is_converted": "converted",
                },
            },
            "opportunities": {
                "file": "deals.csv",
                "fields": {
                    "external_id": "deal_id",
                    "owner_external_id": "owner_id",
                    "name": "deal_name",
                    "stage": "stage",
                    "amount": "amount",
                    "currency": {"value": "USD"},
                    "created_at": {"column": "created", "format": "%Y-%m-%d %H:%M"},
                    "close_date": "close_date",
                    "closed_at": "close_date",
                    "lead_external_id": "lead_id",
                },
                "stages": {
                    "pipeline": "sales",
                    "table": [
                        {"stage": "Qualification", "probability": 0.1},
                        {"stage": "Proposal", "probability": 0.5},
                        {"stage": "Closed Won", "is_won": True, "probability": 1.0},
                        {"stage": "Closed Lost", "is_closed": True, "probability": 0.0},
                    ],
                },
            },
        },
    }

    def __init__(self, settings: CsvSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        data_dir = settings.data_dir.expanduser()
        # The service runs connectors with base_dir = its working directory.
        self.data_dir = data_dir if data_dir.is_absolute() else context.base_dir / data_dir
        self.zone = settings.zone()
        self.nulls = frozenset(settings.null_values)

    # -- the contract -----------------------------------------------------------------------------

    def streams(self) -> Sequence[StreamSpec]:
        """One stream per configured entity, plus ``pipeline_stages`` when a stage table is given."""
        configured = (name for name in _ORDER if self._configured(name))
        return [StreamSpec(name=name, entity=name, snapshot=True) for name in configured]

    def check(self) -> None:
        """Every file exists, decodes with its encoding, and has the columns the mapping names."""
        for name in _ORDER:
            config = self._file_stream(name)
            if config is None:
                continue
            reader, mapper, _ = self._open(name, config)
            with reader:
                for join in mapper.joins.values():
                    join.open().close()

    def read(self, stream: StreamSpec, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
        """The stream's records from the file, resuming from ``checkpoint`` when it still applies."""
        config = self._file_stream(stream.name)
        if config is not None:
            yield from self._read_file(stream.name, config, checkpoint)
            return
        table = self._stage_table()
        if stream.name == "pipeline_stages" and table is not None:
            yield from self._read_stage_table(table, checkpoint)
            return
        raise ConnectorConfigError(f"stream {stream.name!r} is not configured for this csv connection")

    # -- files ------------------------------------------------------------------------------------

    def _configured(self, name: str) -> bool:
        return self._file_stream(name) is not None or (
            name == "pipeline_stages" and self._stage_table() is not None
        )

    def _file_stream(self, name: str) -> FileStream | None:
        return cast(FileStream | None, getattr(self.settings.streams, name, None))

    def _stage_table(self) -> StageTable | None:
        opportunities = self.settings.streams.opportunities
        return opportunities.stages if opportunities is not None else None

    def _file(
        self, name: str, encoding: str | None, delimiter: str | None, max_row_lines: int | None = None
    ) -> CsvFile:
        path = Path(name).expanduser()
        return CsvFile(
            path=path if path.is_absolute() else self.data_dir / path,
            label=name,
            encoding=encoding or self.settings.encoding,
            delimiter=delimiter or self.settings.delimiter,
            max_row_lines=max_row_lines or self.settings.max_row_lines,
        )

    def _open(self, name: str, config: FileStream) -> tuple[CsvReader, StreamMapper, str]:
        """Open the stream's file and compile its mapping; raises before any record for a bad setup.

        Returns the reader (positioned after the header), the mapper and the file's sha256.
        """
        file = self._file(config.file, config.encoding, config.delimiter, config.max_row_lines)
        file.require(f"streams.{name}")
        sha256 = fingerprint(file)
        joins = {
            alias: JoinTable(
                alias,
                join,
                self._file(
                    join.file,
                    join.encoding or config.encoding,
                    join.delimiter or config.delimiter,
                    config.max_row_lines,
                ),
                join_columns(config, alias),
                f"streams.{name}.joins.{alias}",
            )
            for alias, join in config.joins.items()
        }
        reader = CsvReader(file)
        try:
            mapper = StreamMapper(
                name,
                config,
                file,
                Header(reader.header),
                joins,
                self.nulls | frozenset(config.null_values),
                self.zone,
            )
        except BaseException:
            reader.close()
            raise
        return reader, mapper, sha256

    def _inputs(self, config: FileStream | StageTable, joins: Mapping[str, JoinTable]) -> str:
        """A digest of everything besides the file's bytes that decides its records."""
        payload = {
            "format": FORMAT_VERSION,
            "mapping": config.model_dump(mode="json"),
            "timezone": self.settings.timezone,
            "encoding": self.settings.encoding,
            "delimiter": self.settings.delimiter,
            "null_values": sorted(self.nulls),
            "max_row_lines": self.settings.max_row_lines,
            "joins": {alias: join.sha256 for alias, join in sorted(joins.items())},
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    @staticmethod
    def _resume_row(state: Mapping[str, Any], checkpoint: Mapping[str, Any] | None) -> int | None:
        """Where to start: 0 for a full read, the row after a matching checkpoint, ``None`` if done."""
        if checkpoint is None or any(checkpoint.get(key) != value for key, value in state.items()):
            return 0
        row = checkpoint.get("row")
        if not isinstance(row, int) or isinstance(row, bool) or row < 0:
            return 0
        return None if checkpoint.get("done") is True else row

    def _read_file(
        self, name: str, config: FileStream, checkpoint: Mapping[str, Any] | None
    ) -> Iterator[Message]:
        reader, mapper, sha256 = self._open(name, config)
        with reader:
            for join in mapper.joins.values():
                join.load()
            state: dict[str, Any] = {
                "file": config.file,
                "sha256": sha256,
                "inputs": self._inputs(config, mapper.joins),
            }
            start = self._resume_row(state, checkpoint)
            if start is None:
                assert checkpoint is not None
                yield Checkpoint({**state, "row": checkpoint["row"], "done": True})
                return

            header = mapper.header
            batch_size = self.settings.batch_size
            parts = range(mapper.parts)
            rows = reader.rows()
            # Resuming re-parses the rows before the checkpoint as CSV (quoted newlines make byte
            # offsets unreliable to seek to) but maps none of them.
            skipped = sum(1 for _ in itertools.islice(rows, start))
            number = skipped
            chunk: list[Row] = []
            for item in rows:
                if isinstance(item, BrokenRow):
                    # One report per broken line, whatever the number of records a row gives.
                    chunk.append(Row(header, item.cells or [], item.line, number, broken=item))
                else:
                    line, cells = item
                    chunk.extend(Row(header, cells, line, number, part) for part in parts)
                number += 1
                if number % batch_size == 0:
                    yield from mapper.records(chunk)
                    chunk = []
                    yield Checkpoint({**state, "row": number, "done": False})
            yield from mapper.records(chunk)

            if reader.sha256() != sha256:
                # Rewritten while we read: the checkpoints above no longer match it, so the retry
                # reads the new file from the start.
                raise RetriableError(f"{config.file} changed while it was being read")
            for warning in itertools.chain(mapper.broken_joins(), mapper.unmatched_joins()):
                self.context.logger.warning("%s: %s", self.context.connection_id, warning)
            if start == 0:
                yield SnapshotComplete()
            yield Checkpoint({**state, "row": number, "done": True})

    def _read_stage_table(self, table: StageTable, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
        state: dict[str, Any] = {"file": None, "sha256": None, "inputs": self._inputs(table, {})}
        records = StageClassifier(table).records()
        if self._resume_row(state, checkpoint) is None:
            yield Checkpoint({**state, "row": len(records), "done": True})
            return
        yield from records
        yield SnapshotComplete()
        yield Checkpoint({**state, "row": len(records), "done": True})
