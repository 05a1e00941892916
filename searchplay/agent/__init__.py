"""Multi-turn search agents: the tag protocol, trajectories and the batched rollout loop."""
