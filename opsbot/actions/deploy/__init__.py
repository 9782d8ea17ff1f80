"""/deploy TARGET VERSION: a new version, planned (read-only), approved, then run step by step
with each step's time on the card: a verified backup first (when the target has backups), the
deploy, the target's checks until ``verify_deadline``, and, when it is not healthy, an
automatic rollback to what ran before, verified too.

``plans`` validates the version and reads what runs now (the registry asked for a container's
tag); ``steps`` runs a plan; ``action`` declares the action; ``verbs`` the /deploy verb.
"""
