"""Judges score candidates: a rule verifier, an LLM rubric judge, a reward model.

Heavy dependencies (math_verify, torch, transformers) load inside the judges,
so importing this package is cheap.
"""

from prefdata.judge.base import STATUSES, Judge, JudgeItem, Verdict, config_hash
from prefdata.judge.llm_judge import CompletionBackend, LLMJudge, LLMJudgeConfig, build_prompt, parse_verdict
from prefdata.judge.stage import judge_candidates, pending_items
from prefdata.judge.verifier import RuleVerifier, VerifierConfig, extract_answer

__all__ = ["STATUSES", "Judge", "JudgeItem", "Verdict", "config_hash", "CompletionBackend", "LLMJudge",
           "LLMJudgeConfig", "build_prompt", "parse_verdict", "judge_candidates", "pending_items",
           "RuleVerifier", "VerifierConfig", "extract_answer"]
from prefdata.judge.reward_model import RewardModelConfig, RewardModelJudge  # noqa: E402 - torch loads lazily

__all__ += ["RewardModelConfig", "RewardModelJudge"]
