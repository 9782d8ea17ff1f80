"""Incidents: the state machine, the status card, the timeline, the post-mortem,
public status updates, on-call rotations and escalation.

May import alerting's event and engine, actions, reach, state and the ground.
"""
