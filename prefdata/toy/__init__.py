"""The embedded toy world: a synthetic arithmetic task and two tiny models.

Light to import: torch and transformers load only inside the functions that
need them, so ``prefdata --help`` stays instant.
"""
