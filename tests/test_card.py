"""The dataset card: Hugging Face configs per dataset (loaded for real by `datasets`, offline),
no absolute paths, drop reasons explained, refreshed by `score`; the glossary page is current."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from prefdata.card import dataset_card, public_name, write_card
from prefdata.cli import app
from prefdata.glossary import definitions, markdown
from prefdata.store import Workspace

from tests.test_export import PAIRS, make_workspace

ROOT = Path(__file__).resolve().parents[1]


def _workspace(tmp_path) -> Workspace:
    ws = make_workspace(tmp_path / "ws")
    with ws.writer():  # a build's record: its summary's drop counts, its config with a local path
        ws.write_manifest("build:scenario2", {"config": {"policy": {"model": str(tmp_path / "models" / "policy")}},
                                              "summary": {"dropped": {"scenario2": {"duplicate": 12, "tie": 3,
                                                                                    "uniform": 0}}}})
        write_card(ws)
    return ws


def test_card_has_one_loadable_config_per_dataset(tmp_path):
    import datasets

    ws = _workspace(tmp_path)
    text = (ws.root / "README.md").read_text()
    assert text.startswith("---\n") and "configs:\n" in text.split("\n---\n")[0]
    for name in ("scenario2", "mix-1x0.5-4x0.5"):
        loaded = datasets.load_dataset(str(ws.root), name, split="train", cache_dir=str(tmp_path / "cache"))
        assert sorted(loaded["pair_id"]) == sorted(p["pair_id"] for p in PAIRS if p["dataset"] == name)
        assert set(loaded["dataset"]) == {name}


def test_card_holds_no_absolute_paths_and_explains_its_drops(tmp_path):
    ws = _workspace(tmp_path)
    text = dataset_card(ws)
    assert str(tmp_path) not in text and "/models/" not in text
    assert "[manifest.json](manifest.json)" in text and "```json" not in text  # configs stay in the manifest
    assert "| scenario2 | duplicate | 12 |" in text and "| scenario2 | tie | 3 |" in text
    assert "uniform" not in text.split("## What was dropped")[1].split("## Tables")[0]  # zero counts left out
    assert f"- **duplicate**: {definitions()['duplicate']}" in text
    assert "docs/glossary.md" in text
    assert len(text.splitlines()) < 120


def test_public_name_strips_local_directories():
    assert public_name("/home/me/models/Qwen2.5-7B") == "Qwen2.5-7B"
    assert public_name("~/data/gsm8k/") == "gsm8k"
    assert public_name("openai/gsm8k") == "openai/gsm8k" and public_name("verifier") == "verifier"


def test_score_rewrites_the_card(tmp_path):
    ws = make_workspace(tmp_path / "ws", [dict(p, ref_chosen_logp=None) for p in PAIRS])
    with ws.writer():
        write_card(ws)
    assert "| scenario2 | 2 | mixed | dataset reference solution | worst policy sample | 2 | 0 |" in \
        (ws.root / "README.md").read_text()
    result = CliRunner().invoke(app, ["score", str(ws.root), "--dataset", "scenario2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("scored 2 pairs of dataset scenario2 under ")
    assert "| scenario2 | 2 | mixed | dataset reference solution | worst policy sample | 2 | 2 |" in \
        (ws.root / "README.md").read_text()


def test_glossary_page_is_generated_from_the_module_and_covers_every_drop_reason():
    assert (ROOT / "docs" / "glossary.md").read_text() == markdown()
    reasons = {"empty", "truncated", "over_budget", "unscored", "duplicate", "prompt_too_long", "no_policy",
               "no_other", "no_reference", "reference_incorrect", "uniform", "tie", "inverted", "below_margin",
               "same_text", "too_long", "unpaired", "part"}
    assert reasons <= set(definitions())
