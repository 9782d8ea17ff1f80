"""Reach: how opsbot gets at the things it operates: executors (local, SSH, Docker),
file transfer, target kinds and health checks.

May import state and the ground only.
"""
