"""The built-in ``demo`` connector: a deterministic synthetic B2B sales company.

Regions, teams, reps, accounts, leads, opportunities with their stage history, and the reps'
activities (calls, emails, meetings, visits, proposals), generated from a seed and a
size, evolving with the clock so that every sync brings new and changed records. Also the data
source of the benchmarks, which use the context-free generators below.
"""

from crm_perf_sync_demo.company import (
    Company,
    generate_accounts,
    generate_activities,
    generate_leads,
    generate_opportunities,
    generate_stage_changes,
)
from crm_perf_sync_demo.connector import DemoConnector
from crm_perf_sync_demo.settings import DemoSettings

__all__ = [
    "Company",
    "DemoConnector",
    "DemoSettings",
    "generate_accounts",
    "generate_activities",
    "generate_leads",
    "generate_opportunities",
    "generate_stage_changes",
]
