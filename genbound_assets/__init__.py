"""genbound: provable token-level generalization bounds for LLM checkpoint families."""
