"""Backups: dumps per database type, the index and retention, test restores,
cron schedules.

May import reach, state and the ground.
"""
