"""Actions and approvals: each action declared once (``action``: restart, rollback, backup,
restore, listed in ``declared``), a request's life (``lifecycle``, ``cards``,
``reaper``), approvals, step-up, known-good versions, restart/rollback plans (``kinds``) and
backups.

May import the bundle, reach, state and the ground, alerting (a failed scheduled backup
alerts) and incidents (a failed card's Declare incident); never the verbs' callers or Telegram.
"""
