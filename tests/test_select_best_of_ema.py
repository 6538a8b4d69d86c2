"""`--select best_of_ema`: the ASL / ML-Decoder authors' reporting rule (issue 25, item 5).

At every epoch the better (by mAP) of the raw and the EMA model, then the best epoch; the
expected values are picked by hand from hand-written histories."""
from __future__ import annotations

import json

import pytest

from gmbench.cli import main
from gmbench.tables import build_table, to_markdown
from gmbench.tables.model import TableError, selected_metrics


def _m(mAP, cf1):
    return {"mAP": mAP, "CF1": cf1}


def _record(row, seed, history, ema=0.9, final=None, best=None):
    final = final or history[-1].get("metrics") or _m(0.0, 0.0)
    return {"status": "finished", "suite": "s", "row": row, "method": "asl", "dataset": "synthetic",
            "seed": seed, "run_id": f"{row}-{seed}", "metrics": final, "best_metrics": best,
            "config": {"train": {"ema": ema}}, "train": {"history": history},
            "table": {"columns": ["mAP", "CF1"], "chance": False}, "row_order": ["A", "B"]}


# epoch: (EMA, raw); the raw model wins at epoch 2, the EMA model at epoch 3
HIST = [{"epoch": 1, "metrics": _m(0.50, 0.40), "metrics_raw": _m(0.55, 0.45)},
        {"epoch": 2, "metrics": _m(0.60, 0.50), "metrics_raw": _m(0.72, 0.61)},
        {"epoch": 3, "metrics": _m(0.70, 0.66), "metrics_raw": _m(0.65, 0.58)}]


def test_the_better_model_at_the_best_epoch():
    rec = _record("A", 0, HIST, best=_m(0.70, 0.66))
    assert selected_metrics(rec, "best_of_ema") == _m(0.72, 0.61)  # raw, epoch 2
    assert selected_metrics(rec, "best") == _m(0.70, 0.66)         # the EMA model's best epoch
    assert selected_metrics(rec, "final") == _m(0.70, 0.66)


def test_a_run_without_ema_contributes_its_best_epoch():
    hist = [{"epoch": 1, "mAP": 0.3}, {"epoch": 2, "mAP": 0.2}]
    rec = _record("B", 0, hist, ema=None, final=_m(0.2, 0.1), best=_m(0.3, 0.25))
    assert selected_metrics(rec, "best_of_ema") == _m(0.3, 0.25)


def test_an_ema_run_recorded_without_both_models_is_refused():
    hist = [{"epoch": 1, "mAP": 0.3, "raw_mAP": 0.4}]
    rec = _record("A", 0, hist, final=_m(0.3, 0.2), best=_m(0.3, 0.2))
    with pytest.raises(TableError, match="raw and EMA"):
        selected_metrics(rec, "best_of_ema")


def test_table_and_cli(tmp_path, capsys):
    other = [{"epoch": 1, "metrics": _m(0.40, 0.30), "metrics_raw": _m(0.46, 0.36)}]
    records = [_record("A", 0, HIST, best=_m(0.70, 0.66)),
               _record("A", 1, other, best=_m(0.40, 0.30))]
    t = build_table(records, "best_of_ema")
    md = to_markdown(t)
    assert "59.0" in md  # mean of 72 and 46
    assert "better of the raw and the EMA model" in md
    d = tmp_path / "s"
    d.mkdir()
    (d / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["table", str(d), "--select", "best_of_ema", "--format", "md"]) == 0
    assert "59.0" in (d / "table.md").read_text()
