"""World-model families (pure torch, no Ray). Each family lives in ``models/<family>/``."""
