"""From what a team already has (a runbook, a host) to a draft inventory: import, discover.

A wing: it imports ``opsbot.config``, ``services`` and ``reach`` below it and no other wing;
the command line and ``catalog`` (for ``verbs.py``, /discover) import it. ``draft.py`` is
the model both halves fill.
"""
