"""Jobs: the units of work that own a transaction and a lease, and call the domains in order.

A job is what the CLI, the worker's scheduler and the API's queued work run. The domains below
(kpi, alerts, webhooks) only flush on the connection or session they are given; a job opens it,
holds the cluster-wide lease that makes the work run once across replicas, commits, and records
the run.
"""
