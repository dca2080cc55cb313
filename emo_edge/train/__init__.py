"""Training: stage 0 (LM pretraining), then the perception-to-cognition curriculum."""
