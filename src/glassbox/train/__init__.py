"""Training with the write ledger: model from a declaration, data, checkpoints, resume, steering."""
