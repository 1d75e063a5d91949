"""The built-in ``hubspot`` connector: a HubSpot portal through hubspot-api-client.

Owners and their teams, the deal pipelines' stages, contacts that became leads, deals (open and
closed) and their stage history, kept in sync incrementally through the search API and within
the portal's rate limits. See ``connectors/hubspot/README.md`` for the settings.
"""

from crm_perf_sync_hubspot.connector import HubSpotConnector
from crm_perf_sync_hubspot.settings import HubSpotSettings, OAuthSettings, RateLimits

__all__ = ["HubSpotConnector", "HubSpotSettings", "OAuthSettings", "RateLimits"]
