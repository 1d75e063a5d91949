"""The ``rest`` connector: a CRM's REST API read through a YAML spec of its streams.

The spec (``specs/*.yaml`` shipped here, or a file of the user's) declares per stream how to
authenticate, request, page, select records, follow increments and deletions, respect limits and
map the records onto the canonical entities. See ``docs/connectors/rest.md``.
"""
