"""The web face: webhooks, /metrics, the status page (in a real browser too)."""
