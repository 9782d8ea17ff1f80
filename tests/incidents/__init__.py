"""Incidents: the state machine, the post-mortem, on-call and escalation."""
