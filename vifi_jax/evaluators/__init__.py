"""Evaluation: the loop that scores every video's views, and the classification and retrieval
evaluators built on it."""
