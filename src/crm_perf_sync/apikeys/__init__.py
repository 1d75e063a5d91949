"""API keys: created and revoked with the CLI, checked on every API request."""
