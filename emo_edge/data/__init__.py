"""Data: the unified instruction format, the SynthEmo generator and clip loading."""
