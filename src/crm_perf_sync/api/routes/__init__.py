"""The API resources, one router per domain."""
