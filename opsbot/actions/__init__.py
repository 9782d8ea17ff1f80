"""Actions and approvals: restart/rollback plans (``kinds``), the operation flow
(``operations``), approvals, step-up, known-good versions and backups.

May import reach, state and the ground; never alerting, incidents, verbs' callers or Telegram.
"""
