"""emo-edge: audio-visual emotion understanding for robots, from a PyTorch reference to the edge."""

__version__ = "0.1.0"
