"""The kit: what every layer above may use and which imports nothing of the product.

Errors (one family, rendered by the API), the database (engines, session scopes, bulk writes),
time, process settings, logging, metrics definitions, YAML with line numbers, the base of every
configuration model and its durations, Retry-After and backoff arithmetic, the schema migrations
and the files shipped with the package. The connector SDK re-exports what connectors need of it.
"""
