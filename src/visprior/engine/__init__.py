"""Training machinery shared by every task: configuration, checkpoints, the loop, logging."""
