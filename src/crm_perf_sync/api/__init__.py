"""The HTTP API (FastAPI). ``create_app`` builds it; nothing connects at import."""
