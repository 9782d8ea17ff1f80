"""The updates wing: a target's registry asked for newer images, announced once (notices)."""
