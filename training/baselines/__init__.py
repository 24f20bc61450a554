"""Baselines the tuned model must beat: classical (TF-IDF / embeddings + logistic regression)."""
