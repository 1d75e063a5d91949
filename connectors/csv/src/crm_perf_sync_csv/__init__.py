"""The built-in ``csv`` connector: CRM exports imported through a column mapping in the config.

The connector class is :class:`crm_perf_sync_csv.connector.CsvConnector`, registered under the
entry point group ``crm_perf_sync.connectors`` as ``csv``; its settings are
:class:`crm_perf_sync_csv.settings.CsvSettings` (see ``README.md`` of this distribution).
"""
