"""The timeline: the atlas probes over a run's checkpoints, phase changes, why this head, the write table."""
