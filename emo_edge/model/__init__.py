"""The reference model (PyTorch): multiview encoders, Conv-Attention pre-fusion, adapters, fast head, LLM."""
