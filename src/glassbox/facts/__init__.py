"""Where a fact is written: causal tracing (trace), the writing neurons and their bytes (neurons), a rank-one
edit of W_down written as a new model (edit), and a fact set the bundled model knows (factset)."""
