"""Actions and approvals: each action declared once (``action``: restart, rollback, backup,
restore, listed in ``declared``), a request's life (``lifecycle``, ``card_edits``,
``reaper``), approvals, step-up, known-good versions, restart/rollback plans (``kinds``) and
backups.

May import reach, state and the ground; never alerting, incidents, verbs' callers or Telegram.
"""
