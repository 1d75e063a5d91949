"""Signed webhooks: endpoints, the event outbox, and the delivery worker."""
