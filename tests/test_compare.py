"""gmbench run prints its table next to the committed snapshot, with differences."""
import copy
import json

from gmbench.compare import against_snapshot, compare_records, find_snapshot
from gmbench.utils.io import read_jsonl


def test_differences_against_a_snapshot(tmp_path):
    snap = find_snapshot("demo")
    assert snap is not None and snap.parent.name.startswith("demo-")
    then = read_jsonl(snap)
    now = copy.deepcopy(then)
    for r in now:  # every seed of the first row
        if r["row"] == then[0]["row"]:
            r["metrics"]["mAP"] -= 0.05       # 5 points lower
            r["metrics"]["CF1"] += 0.001      # 0.1 point higher
    lines = compare_records(now, then, "snapshot").splitlines()
    row = next(x for x in lines if x.startswith(f"| {then[0]['row']} |")).split(" | ")
    assert row[3] == "−5.0" and row[6] == "+0.1" and row[9] == "0.0 |"
    out = tmp_path / "demo"
    out.mkdir()
    rest = [r for r in now if r["row"] != then[0]["row"]]
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rest))
    text = against_snapshot("demo", out)
    assert "compared with the snapshot" in text and f"only in snapshot: {then[0]['row']}" in text
    assert against_snapshot("no_such_suite", out) == ""
