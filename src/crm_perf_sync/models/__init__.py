"""All ORM models, in one place, so Alembic and the repositories see the same metadata."""

from crm_perf_sync.models.access import ApiKey, DashboardSession
from crm_perf_sync.models.alerts import (
    AlertState,
    AlertTransition,
    ScorePublication,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookFiringRequest,
)
from crm_perf_sync.models.base import Base
from crm_perf_sync.models.changes import PRIOR_TABLES, ChangeBatch
from crm_perf_sync.models.crm import (
    CONFIG_NAMESPACE,
    Account,
    Activity,
    Connection,
    Lead,
    Opportunity,
    Owner,
    PipelineStage,
    StageChange,
    Team,
    TeamMember,
)
from crm_perf_sync.models.incentives import (
    IncentiveClosedRecord,
    IncentiveLine,
    IncentivePeriodClose,
    IncentivePlanDefinition,
    IncentivePlanState,
)
from crm_perf_sync.models.ingest import IngestEvent
from crm_perf_sync.models.kpi import (
    KpiRefreshRun,
    KpiRefreshState,
    KpiSample,
    KpiTarget,
    KpiValue,
    ScorecardState,
    ScorecardValue,
    TargetDefinition,
)
from crm_perf_sync.models.measures import MeasureChange, MeasureEntry
from crm_perf_sync.models.sync import Lease, SyncCheckpoint, SyncRecordError, SyncRun

__all__ = [
    "CONFIG_NAMESPACE",
    "PRIOR_TABLES",
    "Account",
    "Activity",
    "AlertState",
    "AlertTransition",
    "ApiKey",
    "Base",
    "ChangeBatch",
    "Connection",
    "DashboardSession",
    "IncentiveClosedRecord",
    "IncentiveLine",
    "IncentivePeriodClose",
    "IncentivePlanDefinition",
    "IncentivePlanState",
    "IngestEvent",
    "KpiRefreshRun",
    "KpiRefreshState",
    "KpiSample",
    "KpiTarget",
    "KpiValue",
    "Lead",
    "Lease",
    "MeasureChange",
    "MeasureEntry",
    "Opportunity",
    "Owner",
    "PipelineStage",
    "ScorePublication",
    "ScorecardState",
    "ScorecardValue",
    "StageChange",
    "SyncCheckpoint",
    "SyncRecordError",
    "SyncRun",
    "TargetDefinition",
    "Team",
    "TeamMember",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "WebhookFiringRequest",
]
