"""The KPI engine: declarative definitions compiled to SQL and materialised per period and scope."""
