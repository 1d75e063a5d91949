"""The worker role: scheduled syncs (later also KPI refresh, alert evaluation, webhook delivery)."""
