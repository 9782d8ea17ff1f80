"""The web face: the HTTP server (Alertmanager and generic webhooks, Telegram webhook,
/metrics, /healthz), the public status page and the ingest coalescer.

May import the wings, state and the ground. This ``__init__`` imports nothing, so aiohttp is
loaded only when the web server is enabled (see ``opsbot.app``).
"""
