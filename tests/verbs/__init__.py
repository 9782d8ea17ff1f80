"""The verb registry: the authorization matrix and fuzzed dispatch."""
