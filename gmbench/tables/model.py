"""Run records → table rows (mean ± std over seeds), merged with a published table.

Columns come from the suite's ``table.columns``:

* metric keys (``mAP``, ``CF1``, ``OF1@3`` ...), ``AP:<class>`` / ``AP:*`` for per-class AP,
  ``chance mAP`` (via ``table.chance``), ``epoch_s`` (seconds of the last training epoch);
* ``<dataset>/<key>``: the value from the runs on that dataset config only, for tables
  whose rows span datasets (Table 4: one row per variant, MS-COCO and VOC columns). Suite
  rows with the same ``table_row`` fill one table row.

``select`` picks the epoch a run contributes: ``final`` (the record's ``metrics``, the
default) or ``best`` (its ``best_metrics``: the epoch with the best test-split result, which
is model selection on the test split; per-class AP is recorded for the final epoch only).

Each row also carries what its records say about the protocol (``protocol`` block: test
annotations used at test time, a detector whose training set overlaps the test split) and
the images skipped as unreadable (``skipped_images``); records written before those fields
existed simply have none.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .fmt import delta, is_nan, split_col
from ..errors import TableError  # noqa: F401  (re-exported: raised here)

SELECTIONS = ("final", "best", "best_of_ema")
# dataset config name → how a paper names it (captions and notes print no config names)
DISPLAY = {"voc2007": "VOC 2007", "coco2014": "MS-COCO", "nuswide": "NUS-WIDE",
           "synthetic": "the embedded synthetic dataset",
           "synthetic_coco": "synthetic COCO-sized data"}


# headers of the columns that are not metrics (a reader does not know gmbench's keys)
HEADERS = {"epoch_s": "s/epoch", "chance mAP": "chance mAP"}


def dataset_name(ds: str) -> str:
    return DISPLAY.get(ds, ds)


def _columns(spec: dict, records: List[dict]) -> List[str]:
    cols = []
    for c in spec.get("columns", []):
        if c == "AP:*":
            cols += [f"AP:{n}" for n in records[0]["per_class_ap"]]
        else:
            cols.append(c)
    if spec.get("chance"):
        cols.append("chance mAP")
    return cols


def record_value(rec: dict, col: str, select: str = "final"):
    """The value of column ``col`` in one record (a fraction; seconds for epoch_s)."""
    ds, key = split_col(col)
    if ds is not None and rec.get("dataset") != ds:
        return None
    if key == "chance mAP":
        return rec.get("chance_mAP")
    if key == "epoch_s":
        hist = (rec.get("train") or {}).get("history") or []
        return hist[-1].get("train_s") if hist else None
    if key.startswith("AP:"):
        if select != "final":
            raise TableError(f"column {col!r}: per-class AP is recorded for the final epoch "
                             f"only; render this table with --select final")
        return rec.get("per_class_ap", {}).get(key[3:])
    return selected_metrics(rec, select).get(key)


def selected_metrics(rec: dict, select: str = "final") -> dict:
    """The summary metrics a run contributes under ``select`` (fractions):

    * ``final``: the final epoch's (``metrics``; the EMA model where ``train.ema`` is set);
    * ``best``: the epoch with the best test mAP (``best_metrics``);
    * ``best_of_ema``: the authors' rule of ASL and ML-Decoder: at every epoch the better (by
      mAP) of the raw and the EMA model, then the best epoch; a run without EMA contributes
      its ``best`` epoch. Both are selection on the test split.
    """
    where = f"run {rec.get('row')!r} seed {rec.get('seed')}"
    if select == "final":
        return rec.get("metrics", {})
    if select == "best_of_ema":
        hist = (rec.get("train") or {}).get("history") or []
        cands = [m for h in hist for m in (h.get("metrics"), h.get("metrics_raw"))
                 if isinstance(m, dict) and "mAP" in m]
        if cands:  # first of the equal maxima: the earlier epoch, EMA before raw
            return max(cands, key=lambda m: m["mAP"])
        if (rec.get("config") or {}).get("train", {}).get("ema") is not None:
            raise TableError(f"{where} trained with train.ema but its history has no per-epoch "
                             f"raw and EMA metrics (recorded before they were kept); render "
                             f"with --select final or best, or rerun it")
    best = rec.get("best_metrics")
    if not isinstance(best, dict):
        raise TableError(f"{where} has no best_metrics (recorded before best-epoch "
                         f"tracking); render with --select final, or rerun it")
    return best


def key_of(col: str) -> str:
    return split_col(col)[1]


def _table_row(rec: dict) -> str:
    return rec.get("table_row") or rec["row"]


def _protocol(recs: List[dict]) -> dict:
    """What a row's records say about test-time information (absent fields: nothing)."""
    out = {"test_annotations": False, "overlap": []}
    for r in recs:
        p = r.get("protocol") or {}
        out["test_annotations"] |= bool(p.get("test_annotations_used"))
        det = p.get("detector") or {}
        if det.get("overlaps_test"):
            desc = det.get("weights") or "the detector"
            on = ", ".join(det.get("trained_on") or [])
            out["overlap"].append(f"{desc} (trained on {on})" if on else desc)
    out["overlap"] = list(dict.fromkeys(out["overlap"]))
    # the synthetic pretraining the trunks started from, and whether each seed trained its own
    # detector (detector.seed: run) or one detector served every seed (outside the spread)
    pre = {((r.get("protocol") or {}).get("pretraining") or {}).get("digest") for r in recs}
    out["pretraining"] = sorted(d for d in pre if d)
    seeds = [((r.get("config") or {}).get("detector") or {}).get("seed") for r in recs]
    seeds = [x for x in seeds if x is not None]
    if seeds:
        out["detector_seeds"] = len(set(seeds))
    return out


def _skipped(recs: List[dict]) -> Dict[str, List[int]]:
    """split → the non-zero counts of images skipped as unreadable, one per run."""
    out: Dict[str, List[int]] = {}
    for r in recs:
        for split, n in (r.get("skipped_images") or {}).items():
            if n:
                out.setdefault(split, []).append(int(n))
    return out


def aggregate(records: List[dict], select: str = "final",
              planned: Optional[Dict[str, List[int]]] = None) -> Tuple[List[str], List[dict]]:
    """Group records by table row (in suite order): per column mean and std over seeds.
    ``planned``: suite row label → the seeds planned for it (plan.json); a table row with
    fewer finished seeds is marked "[k of n seeds]" and lists the missing ones."""
    if not records:
        raise TableError("no finished runs to tabulate")
    if select not in SELECTIONS:
        raise TableError(f"select {select!r}: choose from {', '.join(SELECTIONS)}")
    latest = records[-1]
    labels = list(latest.get("row_order") or [])
    for r in records:
        if r["row"] not in labels:
            labels.append(r["row"])
    members: Dict[str, List[str]] = {}
    for label in labels:
        recs = [r for r in records if r["row"] == label]
        if recs:
            members.setdefault(_table_row(recs[-1]), []).append(label)
    cols = _columns(latest.get("table", {}), records)
    rows = []
    for tr, labs in members.items():
        recs = sorted((r for r in records if r["row"] in labs), key=lambda r: r["seed"])
        datasets = list(dict.fromkeys(r["dataset"] for r in recs))
        by_ds = {}
        for label in labs:
            ds = next(r["dataset"] for r in recs if r["row"] == label)
            if ds in by_ds:
                raise TableError(f"table row {tr!r}: suite rows {by_ds[ds]!r} and {label!r} both "
                                 f"fill it on dataset {ds!r}; give them different table_row")
            by_ds[ds] = label
        row = {"row": tr, "method": "+".join(dict.fromkeys(r["method"] for r in recs)),
               "dataset": "+".join(datasets), "seeds": sorted({r["seed"] for r in recs}),
               "source": "reproduced", "values": {}, "delta": {}, "samples": {},
               "reference": next((r.get("reference") for r in recs if r.get("reference")), None),
               "protocol": _protocol(recs), "skipped": _skipped(recs), "missing": []}
        want = [(lab, sd) for lab in labs for sd in (planned or {}).get(lab, [])]
        have = {(r["row"], r["seed"]) for r in recs}
        row["missing"] = [f"{lab} seed {sd}" if len(labs) > 1 else f"seed {sd}"
                          for lab, sd in want if (lab, sd) not in have]
        if row["missing"]:  # never silently a mean over fewer seeds than planned
            row["row"] = f"{tr} [{len(want) - len(row['missing'])} of {len(want)} seeds]"
        for c in cols:
            if len(datasets) > 1 and split_col(c)[0] is None:
                raise TableError(f"table row {tr!r} spans datasets {datasets}; column {c!r} "
                                 f"must name one, e.g. {datasets[0]}/{c}")
            vals = [v for v in (record_value(r, c, select) for r in recs) if not is_nan(v)]
            mean = float(np.mean(vals)) if vals else float("nan")
            # chance depends on the test labels alone: its spread over seeds means nothing
            std = float(np.std(vals, ddof=1)) if len(vals) > 1 and key_of(c) != "chance mAP" \
                else None
            row["values"][c] = (mean, std)
            row["samples"][c] = len(vals)
        rows.append(row)
    return cols, rows


@dataclass
class Table:
    """Everything the renderers need: columns, rows (published first), headers."""
    suite: str
    cols: List[str]
    rows: List[dict]
    headers: Dict[str, str] = field(default_factory=dict)
    groups: List[Tuple[Optional[str], int]] = field(default_factory=list)  # contiguous spans
    published: Optional[object] = None   # gmbench.reference.PublishedTable
    reference: Optional[str] = None
    select: str = "final"
    differs: List[str] = field(default_factory=list)   # result settings that differ by row
    signif: Optional[object] = None      # tables.paired.TableSignificance, where computed
    unstarted: List[str] = field(default_factory=list)  # planned rows with no finished run

    def header(self, col: str) -> str:
        ds, key = split_col(col)
        return self.headers.get(col, HEADERS.get(key, key))

    @property
    def reproduced(self) -> List[dict]:
        return [r for r in self.rows if r["source"] == "reproduced"]

    @property
    def datasets(self) -> List[str]:
        return list(dict.fromkeys(d for r in self.reproduced for d in r["dataset"].split("+")))

    def group_of(self) -> Dict[str, str]:
        out, i = {}, 0
        for g, n in self.groups:
            for c in self.cols[i:i + n]:
                if g:
                    out[c] = g
            i += n
        return out


def spans(cols: Sequence[str], groups: Dict[str, List[str]]) -> List[Tuple[Optional[str], int]]:
    group_of = {c: g for g, cs in (groups or {}).items() for c in cs}
    spans: List[Tuple[Optional[str], int]] = []
    for c in cols:
        g = group_of.get(c)
        if spans and spans[-1][0] == g:
            spans[-1] = (g, spans[-1][1] + 1)
        else:
            if g is not None and any(s[0] == g for s in spans):
                raise TableError(f"the columns of header group {g!r} are not next to each "
                                 f"other in table.columns")
            spans.append((g, 1))
    return spans if any(g for g, _ in spans) else []


def build_table(records: List[dict], select: Optional[str] = None,
                planned: Optional[Dict[str, List[int]]] = None) -> Table:
    """Aggregate the records and, where the suite names one, merge the published table.
    ``select`` defaults to the suite's ``table.select`` (if it has one), else ``final``."""
    spec = records[-1].get("table", {}) or {} if records else {}
    select = select or spec.get("select") or "final"
    cols, rows = aggregate(records, select, planned)
    t = Table(suite=records[-1].get("suite", ""), cols=cols, rows=rows,
              reference=spec.get("reference"), select=select)
    recorded = {r["row"] for r in records}
    t.unstarted = [lab for lab in (planned or {}) if lab not in recorded]
    groups = spec.get("group_header") or {}
    if t.reference:
        from ..reference import load_table
        pub = t.published = load_table(t.reference)
        t.headers = dict(pub.headers)
        groups = groups or pub.groups
        published_rows = []
        for pr in pub.rows:
            published_rows.append({
                "row": pr.display, "method": "", "dataset": "+".join(np.atleast_1d(pub.dataset)),
                "seeds": [], "source": "published", "reference": None, "delta": {},
                "name": pr.name, "cite": pr.cite or "", "pub_source": pr.source, "samples": {},
                "protocol": {"test_annotations": False, "overlap": []}, "skipped": {}, "missing": [],
                "values": {c: (float("nan") if pub.value(pr.name, c) is None
                               else pub.value(pr.name, c), None) for c in cols}})
        names = [r.name for r in pub.rows]
        for r in rows:
            if r["reference"] and r["reference"] not in names:
                raise TableError(f"row {r['row']!r}: reference {r['reference']!r} is not a row "
                                 f"of {t.reference}; rows: {', '.join(names)}")
            for c in cols:
                if r["reference"]:
                    r["delta"][c] = delta(r["values"][c][0], pub.value(r["reference"], c), c)
        t.rows = published_rows + rows
    t.groups = spans(cols, groups)
    t.differs = settings_notes(records)
    return t


def settings_notes(records: List[dict]) -> List[str]:
    """One line per dataset on which the rows' result settings (loss, optimizer, schedule,
    input size, epochs ...: :mod:`.settings`) are not all equal."""
    from .settings import describe, differing, row_configs
    out = []
    datasets = list(dict.fromkeys(r.get("dataset") for r in records))
    for ds in datasets:
        diff = differing(row_configs(r for r in records if r.get("dataset") == ds))
        if diff:
            where = f" on {dataset_name(ds)}" if len(datasets) > 1 else ""
            out.append(f"Settings that differ between the rows{where}: "
                       + "; ".join(describe(diff)) + ".")
    return out
