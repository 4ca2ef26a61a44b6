"""Training for AP: the config, the steps of each protocol, the optimisation loop, the cached shared trunk, the
checkpoint format, and `train` itself."""
