"""glassbox: from the mathematics of a transformer to the bytes of its checkpoint, and back."""

__version__ = "0.1.0"
