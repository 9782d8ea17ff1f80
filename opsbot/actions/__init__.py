"""Actions and approvals: each action declared once (``action``: restart, rollback, backup,
restore, deploy, listed in ``declared``), a request's life (``lifecycle``, ``cards``,
``reaper``), approvals, step-up, known-good versions, restart/rollback plans (``kinds``) and
backups.

May import the bundle, reach, state and the ground, alerting (a failed scheduled backup
alerts), incidents (a failed card's Declare incident) and updates (a deploy asks the target's
registry for its tag); never the verbs' callers or Telegram.
"""
