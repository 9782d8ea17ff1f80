"""Reach: the executors over the real sshd and dockerd, targets and checks."""
