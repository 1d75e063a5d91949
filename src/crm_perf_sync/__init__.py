"""crm-perf-sync: sales performance KPIs computed from your CRM."""

__version__ = "0.1.0"
