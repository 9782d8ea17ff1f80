"""The ground: configuration, secret redaction."""
