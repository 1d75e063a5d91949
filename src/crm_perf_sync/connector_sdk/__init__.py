"""The public connector SDK: the only part of crm-perf-sync a connector imports.

A connector is a :class:`Connector` subclass registered under the entry point group
``crm_perf_sync.connectors``. See ``README.md`` ("Writing a connector").

Besides the contract, what a connector's settings and client need and should not write again:
:class:`StrictModel` for nested settings models, :data:`Duration` for durations written as in
the rest of the configuration (``15m``), :func:`retry_after` for a ``Retry-After`` header in
either form, and :func:`backoff_delay` for exponential backoff with jitter. A connector that
reads YAML files of its own (the rest connector's specs) reports their problems as the rest of the
configuration does, ``file:line: key: message``: :func:`load_yaml`, :func:`pydantic_issues` and
:class:`ConfigIssues`. :mod:`.values` and :mod:`.mapping` hold what configured mappings share:
the value parsers (amounts, dates, probabilities, yes/no) and stage tables. A connector whose CRM
pushes changes also implements :class:`Pushable` (:mod:`.push`); one whose CRM cannot push but
can be asked cheaply for its latest change, :class:`Watchable` (:mod:`.watch`).
"""

from crm_perf_sync.connector_sdk.base import (
    Connector,
    ConnectorContext,
    ConnectorSettings,
    Message,
    StreamSpec,
    parse_records,
)
from crm_perf_sync.connector_sdk.errors import (
    ConnectorConfigError,
    ConnectorError,
    FatalError,
    QuotaExhaustedError,
    RetriableError,
    SkippableRecordError,
)
from crm_perf_sync.connector_sdk.messages import BadRecord, Checkpoint, SnapshotComplete, Tombstone
from crm_perf_sync.connector_sdk.push import Pushable, PushedChange, PushRefused, PushRequest
from crm_perf_sync.connector_sdk.records import (
    ACTIVITY_TYPE,
    ACTIVITY_TYPES,
    AccountRecord,
    ActivityRecord,
    Entity,
    LeadRecord,
    OpportunityRecord,
    OwnerRecord,
    PipelineStageRecord,
    Record,
    Scalar,
    StageChangeRecord,
    TeamRecord,
)
from crm_perf_sync.connector_sdk.watch import Watchable
from crm_perf_sync.kit.durations import Duration
from crm_perf_sync.kit.retry import backoff_delay, retry_after
from crm_perf_sync.kit.schema import StrictModel
from crm_perf_sync.kit.timeutil import ensure_utc, utc_now
from crm_perf_sync.kit.yaml_source import ConfigIssues, load_yaml, pydantic_issues

ENTRY_POINT_GROUP = "crm_perf_sync.connectors"

__all__ = [
    "ACTIVITY_TYPE",
    "ACTIVITY_TYPES",
    "ENTRY_POINT_GROUP",
    "AccountRecord",
    "ActivityRecord",
    "BadRecord",
    "Checkpoint",
    "ConfigIssues",
    "Connector",
    "ConnectorConfigError",
    "ConnectorContext",
    "ConnectorError",
    "ConnectorSettings",
    "Duration",
    "Entity",
    "FatalError",
    "LeadRecord",
    "Message",
    "OpportunityRecord",
    "OwnerRecord",
    "PipelineStageRecord",
    "PushRefused",
    "PushRequest",
    "Pushable",
    "PushedChange",
    "QuotaExhaustedError",
    "Record",
    "RetriableError",
    "Scalar",
    "SkippableRecordError",
    "SnapshotComplete",
    "StageChangeRecord",
    "StreamSpec",
    "StrictModel",
    "TeamRecord",
    "Tombstone",
    "Watchable",
    "backoff_delay",
    "ensure_utc",
    "load_yaml",
    "parse_records",
    "pydantic_issues",
    "retry_after",
    "utc_now",
]
