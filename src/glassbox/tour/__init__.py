"""`glassbox tour`: the answer told once, on the user's own model, in three chapters bound to live values:
from the mathematics to the bytes (`bytes.py`), how training writes it (`training.py`), what the file does
not say (`specialization.py`). `build` puts them together into the `tour --json` document."""
