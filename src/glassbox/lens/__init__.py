"""Lenses and causal tracing on the shared activation cache: logit lens, tuned lens, activation patching,
attention-pattern clustering. Each is one module; `commands.py` exposes them on the command line."""
