"""Actions and approvals: restart, rollback, backups, k8s revisions."""
