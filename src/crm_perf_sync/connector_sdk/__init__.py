"""The public connector SDK: the only part of crm-perf-sync a connector imports.

A connector is a :class:`Connector` subclass registered under the entry point group
``crm_perf_sync.connectors``. See ``README.md`` ("Writing a connector").
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
from crm_perf_sync.connector_sdk.records import (
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
from crm_perf_sync.kit.timeutil import ensure_utc, utc_now

ENTRY_POINT_GROUP = "crm_perf_sync.connectors"

__all__ = [
    "ENTRY_POINT_GROUP",
    "BadRecord",
    "Checkpoint",
    "Connector",
    "ConnectorConfigError",
    "ConnectorContext",
    "ConnectorError",
    "ConnectorSettings",
    "Entity",
    "FatalError",
    "LeadRecord",
    "Message",
    "OpportunityRecord",
    "OwnerRecord",
    "PipelineStageRecord",
    "QuotaExhaustedError",
    "Record",
    "RetriableError",
    "Scalar",
    "SkippableRecordError",
    "SnapshotComplete",
    "StageChangeRecord",
    "StreamSpec",
    "TeamRecord",
    "Tombstone",
    "ensure_utc",
    "parse_records",
    "utc_now",
]
