"""State: the store backends (SQLite, Redis), the audit trail, the outbox and the
leader lease.

May import the ground only.
"""
