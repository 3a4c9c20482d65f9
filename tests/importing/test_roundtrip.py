"""Round trip: a built dataset, exported in each TRL form, imported into a new workspace, gives
back the same prompt, chosen and rejected texts. The dataset is built for real (verifier judge,
pair selection) from imported candidates, so no model is needed."""

from __future__ import annotations

import pytest

from prefdata.build import build
from prefdata.config import build_config, scenario_pipeline
from prefdata.export import export_pairs
from prefdata.importing import ImportSpec, import_file
from prefdata.store import Workspace
from tests.importing.conftest import generations, write_jsonl


def built_workspace(tmp_path) -> Workspace:
    path = write_jsonl(tmp_path / "gens.jsonl", generations())
    import_file(tmp_path / "built", ImportSpec(str(path), "candidates", origin="policy", model_name="m"))
    build(tmp_path / "built", build_config(scenario_pipeline(1)), log=lambda _m: None)
    return Workspace.open(tmp_path / "built")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return built_workspace(tmp_path_factory.mktemp("roundtrip"))


@pytest.mark.parametrize("form", ["standard", "conversational", "implicit"])
def test_export_then_import_gives_the_same_texts(built, tmp_path, form):
    original = built.read_polars("pairs").sort("prompt")
    assert original.height == 4
    out = export_pairs(built, tmp_path / "out", conversational=form == "conversational",
                       implicit_prompt=form == "implicit")["scenario1"]
    assert out["form"] == form
    summary = import_file(tmp_path / "ws", ImportSpec(out["path"], "pairs", dataset="again"))
    assert summary["layout"] == form and summary["dropped"] == {}
    again = Workspace.open(tmp_path / "ws").read_polars("pairs").sort("prompt_id")
    assert sorted(again["chosen"]) == sorted(original["chosen"])
    assert sorted(zip(again["chosen"], again["rejected"])) == sorted(zip(original["chosen"], original["rejected"]))
    if form == "implicit":
        # the prompt is the dialogue up to the assistant marker; its user turn is the original prompt
        assert sorted(m[-1]["content"] for m in again["messages"]) == sorted(original["prompt"])
        assert sorted(again["prompt"]) == sorted(f"\n\nHuman: {p}\n\nAssistant:" for p in original["prompt"])
        # and exporting the imported pairs again writes the same file content
        twice = export_pairs(Workspace.open(tmp_path / "ws"), tmp_path / "out2", implicit_prompt=True)["again"]
        import pyarrow.parquet as pq

        assert sorted(pq.read_table(twice["path"]).to_pylist(), key=str) == sorted(
            pq.read_table(out["path"]).to_pylist(), key=str)
    else:
        assert sorted(zip(again["prompt"], again["chosen"], again["rejected"])) == sorted(
            zip(original["prompt"], original["chosen"], original["rejected"]))
