"""From what a team already has (a runbook, a host) to a draft inventory: import, discover.

A wing beside the faces: it imports ``opsbot.config`` and below, and only the command line
imports it. ``draft.py`` is the model both halves fill.
"""
