"""Alerting: the alert event type, the engine (recording and dedup, delivery through the
outbox, digests, reminders), monitors and their scheduler, silences and the status history.

May import actions, reach, state and the ground; never incidents (they import this wing).
"""
