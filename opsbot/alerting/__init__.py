"""Alerting: the alert event type, the engine (recording and dedup, delivery,
digests, reminders), monitors and their scheduler, silences, the notification budget and the
status history.

May import actions, reach, state and the ground; never incidents (they import this wing).
"""
