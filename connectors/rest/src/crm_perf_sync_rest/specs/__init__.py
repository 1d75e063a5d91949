"""The specs shipped with the rest connector, one YAML file per CRM."""
