"""The embedded toy world: a synthetic arithmetic task and two tiny models.

Light to import: torch and transformers load only inside the functions that
need them, so ``prefdata --help`` stays instant.
"""

from .task import Problem, extract_answer, generate, write_split
from .train import ensure_toy_models, other_path, policy_path, train_toy_models

__all__ = ["Problem", "extract_answer", "generate", "write_split", "ensure_toy_models",
           "other_path", "policy_path", "train_toy_models"]
