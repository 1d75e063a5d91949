"""Discovery of connector plugins (the core never imports a connector package directly)."""
