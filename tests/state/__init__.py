"""State: the store backends' contract, the leader lease."""
