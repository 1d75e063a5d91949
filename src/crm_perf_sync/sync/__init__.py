"""Moving records from connectors into the canonical store, incrementally and exactly once."""
