"""The connector contract suite, shipped for connector authors to run in their own tests.

Subclass :class:`ConnectorContract` in a test module (see :mod:`crm_perf_sync.testing.contract`);
the store it syncs into comes from the pytest plugin :mod:`crm_perf_sync.testing.plugin`, which
installing crm-perf-sync registers. This package sits at the top of the import order: it drives
the sync engine into a migrated store, so nothing in the product imports it.
"""

from crm_perf_sync.testing.contract import ConnectorContract

__all__ = ["ConnectorContract"]
