"""`prefdata gc`: remove the candidates and judgments no stored dataset refers to.

Builds never delete: changing a setting (a temperature, a model) adds rows under
new work keys beside the old ones, because another dataset's pairs may refer to
the old ones. This is the one place rows go, and it keeps everything referenced.

What is kept:

* every candidate of a *generation setting* that some pair refers to: the setting
  is (origin, model hash, sampling parameters, chat-template hash), so a dataset
  keeps all the samples it was selected from, and rebuilding it is still free;
  dataset references (origin "reference") count as one setting per source;
* every judgment of a kept candidate;
* every prompt and every pair (gc never touches a dataset).

What goes: candidates of settings no pair refers to (e.g. the samples of an old
temperature after every dataset moved on), and judgments whose candidate is gone.
Parts are rewritten atomically (or deleted when emptied), then the manifest.

>>> report = collect(Workspace.open("ws"), dry_run=True)  # doctest: +SKIP
>>> report.candidates_freed, report.bytes_freed           # doctest: +SKIP
(2048, 1203117)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prefdata.store import Workspace

SETTING = ("origin", "model_hash", "sampling_params", "template_hash")


@dataclass
class GcReport:
    candidates_freed: int = 0
    judgments_freed: int = 0
    parts_rewritten: int = 0
    parts_deleted: int = 0
    bytes_freed: int = 0
    settings_freed: list[dict] = field(default_factory=list)  # one entry per setting removed
    candidates_kept: int = 0
    judgments_kept: int = 0
    dry_run: bool = False

    def text(self, root) -> str:
        verb = "would free" if self.dry_run else "freed"
        lines = [f"{root}: {verb} {self.candidates_freed} candidates and {self.judgments_freed} judgments "
                 f"({self.bytes_freed / 1e6:.2f} MB; {self.parts_deleted} parts deleted, "
                 f"{self.parts_rewritten} rewritten); kept {self.candidates_kept} candidates and "
                 f"{self.judgments_kept} judgments of the generation settings stored pairs were drawn from"]
        for s in self.settings_freed:
            lines.append(f"  {s['origin']} {s['model_hash']} {s['sampling_params']}: {s['rows']} candidates")
        return "\n".join(lines)


_SEP = "\x1f"


def _setting(table: pa.Table) -> pa.Array:
    """One string per row naming its generation setting (the SETTING columns joined)."""
    columns = [pc.fill_null(table[c], "").combine_chunks() for c in SETTING]
    return pc.binary_join_element_wise(*columns, _SEP)


def _referenced_settings(ws: Workspace) -> pa.Array:
    pairs = ws.read("pairs", ["chosen_candidate_id", "rejected_candidate_id"])
    wanted = pa.concat_arrays([pairs["chosen_candidate_id"].combine_chunks(),
                               pairs["rejected_candidate_id"].combine_chunks()]).unique()
    found = [pa.array([], pa.string())]
    for path in ws.parts("candidates"):
        part = pq.read_table(path, columns=["candidate_id", *SETTING])
        found.append(_setting(part.filter(pc.is_in(part["candidate_id"], value_set=wanted))))
    return pa.concat_arrays(found).unique()


def _shrink(ws: Workspace, table: str, path, keep: pa.Array, report: GcReport, dry_run: bool) -> int:
    """Keep the rows of one part where `keep` is true; returns the rows removed."""
    removed = len(keep) - (pc.sum(keep).as_py() or 0)
    if not removed:
        return 0
    key = path.name[len("part-"):-len(".parquet")]
    size = path.stat().st_size
    if removed == len(keep):
        report.parts_deleted += 1
        report.bytes_freed += size
        if not dry_run:
            ws.delete_part(table, key)
    else:
        report.parts_rewritten += 1
        if not dry_run:
            ws.write_part(table, key, pq.read_table(path).filter(keep))
            report.bytes_freed += max(0, size - path.stat().st_size)
    return removed


def collect(ws: Workspace, dry_run: bool = False) -> GcReport:
    """Remove (or with `dry_run`, count) what no stored pair refers to; see the module docstring."""
    from prefdata.check import refuse_if_damaged

    refuse_if_damaged(ws.root)  # never rewrite parts of a damaged workspace
    report = GcReport(dry_run=dry_run)
    with ws.writer():
        settings = _referenced_settings(ws)
        freed: dict[str, int] = {}
        kept_ids: list[pa.Array] = []
        for path in ws.parts("candidates"):
            part = pq.read_table(path, columns=["candidate_id", *SETTING])
            setting = _setting(part)
            keep = pc.is_in(setting, value_set=settings)
            for entry in pc.value_counts(setting.filter(pc.invert(keep))).to_pylist():
                freed[entry["values"]] = freed.get(entry["values"], 0) + entry["counts"]
            kept_ids.append(part["candidate_id"].filter(keep).combine_chunks())
            report.candidates_freed += _shrink(ws, "candidates", path, keep, report, dry_run)
        kept = pa.concat_arrays(kept_ids) if kept_ids else pa.array([], pa.string())
        report.candidates_kept = len(kept)
        for path in ws.parts("judgments"):
            ids = pq.read_table(path, columns=["candidate_id"])["candidate_id"]
            keep = pc.is_in(ids, value_set=kept).combine_chunks() if len(ids) else pa.array([], pa.bool_())
            report.judgments_kept += pc.sum(keep).as_py() or 0
            report.judgments_freed += _shrink(ws, "judgments", path, keep, report, dry_run)
        report.settings_freed = [dict(zip(SETTING, k.split(_SEP)), rows=n) for k, n in sorted(freed.items())]
        if not dry_run and (report.candidates_freed or report.judgments_freed):
            ws.write_manifest("gc", {"candidates_freed": report.candidates_freed,
                                     "judgments_freed": report.judgments_freed})
    return report
