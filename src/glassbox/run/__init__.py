"""Run real models: load any checkpoint into its HF class, cache activations under uniform names, ablate, patch."""

from glassbox.run.load import Loaded, load_model

__all__ = ["Loaded", "load_model"]
