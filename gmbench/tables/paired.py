"""Significance for a suite's table: the paired bootstrap of :mod:`.significance` on the
runs' ``preds/<run_id>.npz`` files.

For each headline column (mAP; ``<dataset>/mAP`` in tables over several datasets) the
reproduced rows on one dataset are compared with the best of them. A row is marked
(``MARK``) when its difference is below zero with a Holm-corrected p < 0.05 over the rows
compared. A row whose runs lack predictions (records written before they were kept, or a
deleted file) is left out of the test, gets no mark, and a note says why; a file whose
sha256 differs from its record's is an error (:class:`gmbench.predictions.PredictionsError`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..predictions import read_predictions
from .fmt import split_col
from .model import Table, dataset_name
from .significance import ALPHA, RESAMPLES, Comparison, Run, compare

MARK = "↓"


@dataclass
class TableSignificance:
    """(table row, column) → its test against the best row of its pool."""
    resamples: int
    cells: Dict[Tuple[str, str], dict] = field(default_factory=dict)
    refs: Dict[str, List[str]] = field(default_factory=dict)   # column → reference row(s)
    compared: Dict[str, int] = field(default_factory=dict)     # column → rows in the test
    notes: List[str] = field(default_factory=list)

    def below(self, row: str, col: str) -> bool:
        cell = self.cells.get((row, col))
        return bool(cell and cell["below"])


def headline(t: Table) -> List[str]:
    """The columns that get significance marks: mAP (per dataset) where the table has it."""
    return [c for c in t.cols if split_col(c)[1] == "mAP"]


def load_run(suite_dir: Path, rec: dict) -> Tuple[Optional[Run], Optional[np.ndarray], str]:
    """(Run, image ids, "") or (None, None, why not) for one record."""
    entry = rec.get("predictions")
    if not entry:
        return None, None, "its records predate per-image predictions"
    if not (Path(suite_dir) / str(entry.get("file", ""))).is_file():
        return None, None, f"{entry.get('file')} is missing"
    p = read_predictions(suite_dir, entry)   # a tampered file raises, naming it
    return Run(p.probs, p.targets, (rec.get("config") or {}).get("eval") or {}), p.image_ids, ""


def align(runs: Dict[str, List[Tuple[Run, np.ndarray]]]) -> Tuple[Dict[str, List[Run]], int, int]:
    """Restrict every run to the images all of them hold, in one order.
    Returns (rows of runs, images kept, most images any run held)."""
    flat = [ids for rs in runs.values() for _, ids in rs]
    common = flat[0]
    same = all(len(ids) == len(common) and np.array_equal(ids, common) for ids in flat)
    if not same:
        keep = set(common)
        for ids in flat[1:]:
            keep &= set(ids.tolist())
        common = np.array([i for i in flat[0] if i in keep], dtype=flat[0].dtype)
    out: Dict[str, List[Run]] = {}
    for label, rs in runs.items():
        out[label] = []
        for run, ids in rs:
            if not same:
                pos = {v: k for k, v in enumerate(ids.tolist())}
                idx = np.array([pos[i] for i in common.tolist()], dtype=np.int64)
                run = Run(run.probs[idx], run.targets[idx], run.eval)
            out[label].append(run)
    return out, len(common), max(len(ids) for ids in flat)


def pool_runs(suite_dir: Path, records: Sequence[dict], rows: Sequence[str], dataset: str,
              missing: Dict[str, List[str]]) -> Dict[str, List[Tuple[Run, np.ndarray]]]:
    """{table row: [(Run, ids)]} of the rows whose every run on ``dataset`` has predictions;
    the others are added to ``missing`` (why → rows)."""
    out = {}
    for row in rows:
        recs = [r for r in records if (r.get("table_row") or r["row"]) == row
                and r.get("dataset") == dataset]
        loaded = [load_run(suite_dir, r) for r in recs]
        why = next((w for _, _, w in loaded if w), "")
        if why:
            missing.setdefault(why, [])
            if row not in missing[why]:
                missing[why].append(row)
        elif recs:
            out[row] = [(run, ids) for run, ids, _ in loaded]
    return out


def missing_notes(missing: Dict[str, List[str]], n_rows: int = 0) -> List[str]:
    """One note per reason a row has no significance mark (``n_rows``: rows in the table)."""
    out = []
    for why, rows in missing.items():
        who = rows[0] if len(rows) == 1 else ", ".join(rows[:-1]) + " and " + rows[-1]
        head = ("No significance marks" if len(rows) == n_rows
                else f"No significance mark for {who}")
        out.append(f"{head}: {why.replace('its records', 'the records')} (rerun to keep "
                   f"predictions).")
    return out


def compare_pool(runs: Dict[str, List[Tuple[Run, np.ndarray]]], notes: List[str], where: str,
                 **kw) -> Optional[Comparison]:
    """The bootstrap over one pool of rows (None below two rows)."""
    if len(runs) < 2:
        return None
    aligned, n, most = align(runs)
    if n < most:
        notes.append(f"Significance{where} is computed on the {n} test images every compared "
                     f"run evaluated (of {most}).")
    if n == 0:
        return None
    return compare(aligned, **kw)


def table_significance(t: Table, records: Sequence[dict], suite_dir: Path,
                       resamples: int = RESAMPLES, seed: int = 0) -> TableSignificance:
    """Significance of every reproduced row's headline value against its pool's best row."""
    sig = TableSignificance(resamples)
    cols = headline(t)
    if not cols or len(t.reproduced) < 2:
        return sig
    if t.select != "final":
        sig.notes.append("No significance marks: predictions are kept for the final epoch "
                         "only, and this table shows each run's best epoch.")
        return sig
    missing: Dict[str, List[str]] = {}
    for c in cols:
        ds = split_col(c)[0]
        pools = dict.fromkeys(ds or r["dataset"] for r in t.reproduced)
        for pool in pools:
            rows = [r["row"] for r in t.reproduced if (ds or r["dataset"]) == pool
                    and r["samples"].get(c, 0)]
            where = f" on {dataset_name(pool)}" if len(t.datasets) > 1 else ""
            runs = pool_runs(suite_dir, records, rows, pool, missing)
            res = compare_pool(runs, sig.notes, where, metrics=["mAP"], resamples=resamples,
                               seed=seed)
            if res is None:
                continue
            sig.refs.setdefault(c, []).append(res.ref)
            sig.compared[c] = sig.compared.get(c, 0) + len(res.rows) - 1
            for row in res.rows:
                sig.cells[(row, c)] = {
                    "ref": res.ref, "is_ref": row == res.ref, "delta": res.delta[row]["mAP"], "ci": res.ci[row]["mAP"],
                    "p": res.p[row]["mAP"], "p_holm": res.p_holm[row].get("mAP", float("nan")),
                    "below": res.significant(row, "mAP", ALPHA)}
    sig.notes = missing_notes(missing, len(t.reproduced)) + sig.notes
    return sig


def caption_sentence(t: Table) -> str:
    """What the marks mean (empty when nothing was tested)."""
    sig = getattr(t, "signif", None)
    if sig is None or not sig.cells:
        return ""
    refs = sorted({r for rs in sig.refs.values() for r in rs})
    m = max(sig.compared.values())
    return (f"{MARK}: mAP significantly below the best row's ({', '.join(refs)}): paired "
            f"bootstrap over the test images ({sig.resamples:,} resamples, each applied to "
            f"every row and seed), p < {ALPHA:g} Holm-corrected over the {m} row{'s' if m != 1 else ''} compared.")
