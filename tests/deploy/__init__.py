"""How opsbot is run: the command line, deployment files, replicas."""
