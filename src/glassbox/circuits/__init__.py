"""Circuits from the weights: composition scores, why a head attends, path patching, and the bytes of a pair."""
