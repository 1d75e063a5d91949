"""The built-in ``salesforce`` connector: accounts, leads, opportunities, owners, stage history and
activities, kept in sync.

The connector class is :class:`crm_perf_sync_salesforce.connector.SalesforceConnector`, registered
under the entry point group ``crm_perf_sync.connectors`` as ``salesforce``; its settings are
:class:`crm_perf_sync_salesforce.settings.SalesforceSettings` (see ``README.md`` of this
distribution). It talks to the org through simple-salesforce (REST) and the Bulk API 2.0.
"""
