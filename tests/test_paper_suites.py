"""Paper suites (Tables 1-4, Figure 4, GPU timing): dry runs without data, the missing-data
error, the published numbers against the paper text, and rendering of fabricated run records
(written here, never trained) against golden files. Set GMBENCH_UPDATE_GOLDEN=1 to rewrite
the golden files after an intended change, then review their diff."""
import csv
import hashlib
import io
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from gmbench import config as C
from gmbench import runner
from gmbench.cli import main
from gmbench.tables.figures import sweep_series, x_value
from gmbench.reference import load_table
from gmbench.tables import aggregate, write_tables
from gmbench.utils.io import append_jsonl

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"
PAPER = Path(os.environ.get("GMBENCH_PAPER_TEXT", "/work/shared/gm-mlic-paper.txt"))
TABLES = ["voc_table1", "coco_table2", "nuswide_table3", "ablation_table4"]
FIGURES = ["fig4_instances", "fig4_modules"]
MODERN = ["coco_modern", "voc_modern"]   # more checks: tests/test_modern_suites.py
# every suite file, so a new one is tested for free (the demo included)
SUITES = sorted(p.stem for p in (REPO / "configs" / "suites").glob("*.yaml"))
SECTION_4_2 = {"optim.name": "sgd", "optim.lr": 0.01, "optim.momentum": 0.9,
               "optim.weight_decay": 1e-4, "optim.scheduler": "step", "optim.step_size": 30,
               "optim.gamma": 0.1, "data.image_size": 448, "data.train_transform": "mlgcn"}
PAPER_M_BETA = {"voc2007": (10, 0.0), "coco2014": (35, 0.4), "nuswide": (35, 0.4)}


def _get(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


# ---------------------------------------------------------------- suite content and dry runs

@pytest.mark.parametrize("name", TABLES + FIGURES)
def test_paper_rows_carry_the_papers_settings(name):
    suite = runner.load_suite(name)
    runs = runner.plan(suite, {})
    assert suite.seeds == [0, 1, 2]
    for r in runs:
        cfg = C.to_dict(r.cfg)
        if r.row.method == "gm_mlic":
            for key, want in SECTION_4_2.items():
                assert _get(cfg, key) == want, (r.row.label, key)
            m, beta = PAPER_M_BETA[r.row.dataset]
            assert cfg["model"]["beta"] == beta and cfg["model"]["features"] == "views"
            assert cfg["model"]["views"] == 8   # docs/performance.md, "Views against online"
            assert cfg["model"]["detector_weights"] == "coco"   # §4.2's COCO Faster R-CNN
            if name != "fig4_instances":
                assert cfg["model"]["top_m"] == m, r.row.label
            if name != "fig4_modules":
                assert cfg["model"]["dims"] == [512, 256]
        else:
            assert cfg["model"]["pretrained"] == "imagenet", r.row.label
        assert cfg["data"]["glove"].endswith("glove.6B.300d.txt")
    if name == "ablation_table4":
        flags = {(r.row.table_row, r.row.dataset): (r.cfg.model.use_label_graph,
                 r.cfg.model.use_instance_graph, r.cfg.model.use_matching_edges) for r in runs}
        assert flags[("w/o Gl", "coco2014")] == (False, True, True)
        assert flags[("w/o Go", "voc2007")] == (True, False, True)
        assert flags[("w/o ILM edges", "coco2014")] == (True, True, False)
        assert flags[("GM-MLIC", "voc2007")] == (True, True, True)
    if name in FIGURES:
        xs = {(r.row.dataset, x_value({"config": C.to_dict(r.cfg)}, suite.table.figure))
              for r in runs}
        assert {d for d, _ in xs} == {"voc2007", "coco2014", "nuswide"}
        want = {1, 2, 3, 4} if name == "fig4_modules" else {5, 10, 20, 35, 50}
        assert {x for _, x in xs} == want


@pytest.mark.parametrize("name", SUITES)
def test_dry_run_lists_the_files_without_data(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--suite", name, "--dry-run", "--out", "results"]) == 0
    out = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # a dry run creates nothing
    from gmbench.data import get_spec
    suite = runner.load_suite(name)
    runs = runner.plan(suite, {})
    assert f"{len(runs)} runs" in out
    for r in runs:
        d = r.cfg.data
        if d.name == "synthetic":
            assert "generated on first use" in out
            continue
        for split in (d.train_split, d.test_split):
            for p in get_spec(d.name).expected_files(Path(d.root), split, d):
                assert f"MISSING {p}" in out
        assert f"MISSING {d.glove}  (GloVe word vectors)" in out
    paths = {
        "voc_table1": ["data/voc2007/VOCdevkit/VOC2007/ImageSets/Main/trainval.txt",
                       "data/voc2007/VOCdevkit/VOC2007/ImageSets/Main/tvmonitor_test.txt",
                       "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth  (views detector weights)"],
        "coco_table2": ["data/coco2014/annotations/instances_val2014.json",
                        "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth  (views detector weights)"],
        "nuswide_table3": ["data/nuswide/ImageList/TestImagelist.txt",
                           "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth  (views detector weights)"],
        "gpu_coco_synthetic": [".cache/gpu_coco_synthetic/train-boxes-m35/manifest.json"],
        "coco_modern": ["data/coco2014/annotations/instances_val2014.json",
                        "resnet101-63fe2227.pth  (backbone weights)",
                        "weights/tresnet_l.safetensors  (backbone weights)",
                        "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth  (views detector weights)"],
        "voc_modern": ["weights/tresnet_xl.safetensors  (backbone weights)"],
    }.get(name, [])
    for p in paths:
        assert any(line.strip().startswith("MISSING") and p in line
                   for line in out.splitlines()), p
    if any(r.cfg.data.name != "synthetic" for r in runs):  # dataset files to check
        assert "gmbench data check" in out


@pytest.mark.parametrize("name,sets,path,layout,rc", [
    # a root that does not exist: rejected before any work (exit 2)
    ("voc_table1", ["--set", "data.root=ELSEWHERE"], "ELSEWHERE", "VOCdevkit/VOC2007", 2),
    # the root exists, the annotation file in it does not: found while reading (exit 1)
    ("coco_table2", [], "data/coco2014/annotations/instances_train2014.json", "annotations/", 1),
])
def test_missing_dataset_is_one_clear_error(name, sets, path, layout, rc, tmp_path, monkeypatch,
                                            capsys):
    monkeypatch.chdir(tmp_path)
    if rc == 1:
        (tmp_path / "data" / "coco2014").mkdir(parents=True)
    sets = [s.replace("ELSEWHERE", str(tmp_path / "nowhere")) for s in sets]
    path = path.replace("ELSEWHERE", str(tmp_path / "nowhere"))
    got = main(["run", "--suite", name, "--out", "results", "--device", "cpu"] + sets)
    err = capsys.readouterr().err
    assert got == rc
    assert err.count("error:") == 1
    assert path in err and "Expected layout" in err and layout in err
    assert "gmbench data check" in err
    assert not (tmp_path / "results" / name / "runs.jsonl").exists()
    assert not (tmp_path / "nowhere").exists()


def test_bad_reference_name_is_a_config_error(tmp_path):
    doc = yaml.safe_load((REPO / "configs/suites/coco_table2.yaml").read_text())
    doc["rows"][0]["reference"] = "ResNet-152"
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(C.ConfigError, match="ResNet-152.*not a row of gm_mlic_ijcai21/table2"):
        runner.plan(runner.load_suite(str(p)), {})


# ---------------------------------------------------------------- published numbers

def _paper_rows(lines):
    """'Name [cite] 1.0 - 2.0' → (name, cite, [1.0, None, 2.0]) for each line with numbers."""
    rows = []
    for line in lines:
        toks = line.split()
        k = len(toks)
        while k > 0 and re.fullmatch(r"\d+\.\d|-", toks[k - 1]):
            k -= 1
        if k == len(toks) or k == 0:
            continue
        m = re.fullmatch(r"(.+?)(?: \[(.+)\])?", " ".join(toks[:k]))
        rows.append((m.group(1), m.group(2), [None if t == "-" else float(t) for t in toks[k:]]))
    return rows


@pytest.mark.skipif(not PAPER.is_file(), reason=f"paper text {PAPER} not available")
def test_reference_file_matches_the_paper_text():
    text = [ln.strip() for ln in PAPER.read_text(encoding="utf-8").splitlines()]
    starts = [i for i, ln in enumerate(text) if ln.startswith(("Methods aero", "Methods All",
                                                                "Dataset MS-COCO VOC"))]
    ends = [next(j for j in range(s, len(text)) if text[j].startswith(f"Table {n}:"))
            for n, s in enumerate(starts, 1)]
    assert len(starts) == 4
    for n, (s, e) in enumerate(zip(starts, ends), 1):
        pub = load_table(f"gm_mlic_ijcai21/table{n}")
        assert pub.source == f"paper/table{n}"
        got = [(r.name, r.cite, r.values) for r in pub.rows]
        assert got == _paper_rows(text[s:e]), f"table {n}"
    header = text[starts[0]].split()[1:]
    t1 = load_table("gm_mlic_ijcai21/table1")
    assert [t1.headers.get(c, c) for c in t1.columns] == header


# ---------------------------------------------------------------- rendering (golden files)

def _u(*key) -> float:
    """Deterministic uniform [0, 1) from a key (no RNG state involved)."""
    return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:4], "little") / 2 ** 32


METRICS = ["mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "CP@3", "CR@3", "CF1@3", "OP@3",
           "OR@3", "OF1@3"]


def fabricate(name: str, out: Path):
    """Records like execute() writes, for every planned run; values near the published ones."""
    suite = runner.load_suite(name)
    pub = load_table(suite.table.reference) if suite.table.reference else None
    from gmbench.data.voc import VOC_CLASSES
    values = {}
    for r in runner.plan(suite, {}):
        def val(key):
            base = None
            if pub and r.row.reference:
                col = key if key in pub.columns else f"{r.row.dataset}/{key}"
                base = pub.value(r.row.reference, col)
            if base is None:
                base = 0.5 + 0.4 * _u(r.row.label, key)
            return round(base - 0.02 + 0.011 * r.seed + 0.004 * _u(r.row.label, key, r.seed), 6)
        rec = {"status": "finished", "suite": suite.name, "row": r.row.label, "seed": r.seed,
               "method": r.row.method, "model": r.cfg.model.name, "dataset": r.row.dataset,
               "reference": r.row.reference, "table_row": r.row.table_row or r.row.label,
               "metrics": {k: val(k) for k in METRICS},
               "per_class_ap": {c: val("AP:" + c) for c in VOC_CLASSES},
               "chance_mAP": 0.25, "config": C.to_dict(r.cfg),
               "train": {"history": [{"epoch": 1, "train_s": 30.0 + r.seed},
                                     {"epoch": 2, "train_s": 20.0 + 10 * _u(r.row.label)}]},
               "table": suite.table.model_dump(), "row_order": [x.label for x in suite.rows]}
        values[(r.row.label, r.seed)] = rec
        append_jsonl(out / name / "runs.jsonl", rec)
    return out / name, values


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    done = {}
    for name in SUITES:
        d, values = fabricate(name, out)
        write_tables(d, ("csv", "md", "tex"))
        done[name] = (d, values)
    return done


@pytest.mark.parametrize("name", SUITES)
def test_rendering_matches_golden_and_rerenders_identically(name, rendered):
    d, _ = rendered[name]
    for fmt in ("csv", "md", "tex"):
        got = (d / f"table.{fmt}").read_text(encoding="utf-8")
        gold = GOLDEN / f"{name}.{fmt}"
        if os.environ.get("GMBENCH_UPDATE_GOLDEN"):
            gold.parent.mkdir(exist_ok=True)
            gold.write_text(got, encoding="utf-8")
        assert got == gold.read_text(encoding="utf-8"), f"{gold} differs"
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.name != "runs.jsonl"}
    for p in d.iterdir():
        if p.name != "runs.jsonl":
            p.unlink()
    assert main(["table", str(d), "--format", "csv,md,tex"]) == 0
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.name != "runs.jsonl"} == before


def _csv(d: Path):
    return list(csv.DictReader(io.StringIO((d / "table.csv").read_text())))


@pytest.mark.parametrize("name", TABLES + MODERN)
def test_csv_numbers_against_numpy_and_the_reference(name, rendered):
    d, values = rendered[name]
    suite = runner.load_suite(name)
    pub = load_table(suite.table.reference)
    rows = _csv(d)
    assert [r["row"] for r in rows if r["source"] != "gmbench"] == [p.name for p in pub.rows]
    for r in rows[:len(pub.rows)]:
        for c in pub.columns:
            v = pub.row(r["row"]).values[pub.columns.index(c)]
            assert r[c] == ("" if v is None else f"{v:.1f}") and r[f"{c} delta"] == ""
    by_tr = {}
    for row in suite.rows:
        by_tr.setdefault(row.table_row or row.label, []).append(row)
    repro = rows[len(pub.rows):]
    assert [r["row"] for r in repro] == list(by_tr)
    for r in repro:
        assert r["source"] == "gmbench" and r["n_seeds"] == "3"
        for c in pub.columns:
            ds, key = c.split("/") if "/" in c else (None, c)
            members = [x for x in by_tr[r["row"]] if ds in (None, x.dataset)]
            vals = [100 * (values[(m.label, s)]["per_class_ap"][key[3:]] if key.startswith("AP:")
                           else values[(m.label, s)]["metrics"][key])
                    for m in members for s in suite.seeds]
            assert r[c] == f"{np.mean(vals):.1f}" and r[f"{c} std"] == f"{np.std(vals, ddof=1):.1f}"
            ref = members[0].reference
            p = pub.value(ref, c) if ref else None
            if p is None:
                assert r[f"{c} delta"] == ""
            else:
                want = round(float(f"{np.mean(vals):.1f}") - float(f"{100 * p:.1f}"), 1)
                assert float(r[f"{c} delta"]) == pytest.approx(want, abs=1e-9)


def _tex_rows(tex: str, keys):
    """Body cells per table row, keyed by column: {row index: {key: cell}}. Handles the
    stacked-halves layout (a second header line starts the next block of columns) and
    skips section titles (\\multicolumn), group headers and std / delta lines (no name)."""
    rows, block, pos, i = {}, [], 0, -1
    for ln in tex.split("\\toprule", 1)[1].split("\\bottomrule")[0].splitlines():
        if not ln.endswith("\\\\") or "\\multicolumn" in ln:
            continue
        cells = ln[:-len(" \\\\")].split(" & ")
        if cells[0] == "Method":
            n = len([c for c in cells[1:] if c])
            block, pos, i = keys[pos:pos + n], pos + n, -1
            continue
        if not cells[0]:
            continue
        i += 1
        rows.setdefault(i, {}).update(zip(block, cells[1:]))
    assert pos == len(keys)
    return rows


@pytest.mark.parametrize("name", SUITES)
def test_latex_is_structurally_sound(name, rendered):
    d, _ = rendered[name]
    tex = (d / "table.tex").read_text()
    plain = tex.replace("\\{", "").replace("\\}", "")
    depth = 0
    for ch in plain:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{([^}]*)\}", tex):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack.pop() == env
    assert stack == []
    for rule in ("\\toprule", "\\bottomrule"):
        assert tex.count(rule) == 1
    assert tex.count("\\midrule") >= 1 and tex.index("\\toprule") < tex.index("\\bottomrule")
    rows = _csv(d)
    key = [k for k in rows[0] if k not in ("row", "source", "cite", "reference", "method",
                                           "dataset", "n_seeds", "selection")
           and not k.endswith((" std", " delta"))]
    if name in ("coco_table2", "nuswide_table3", "ablation_table4"):
        assert "\\cmidrule(lr){2-" in tex
    cells = _tex_rows(tex, key)
    assert len(cells) == len(rows)
    for c in key:
        if c in ("epoch_s", "chance mAP"):  # not ranked
            assert not any("\\textbf" in r[c] for r in cells.values())
            continue
        # One bold cell per dataset and per source (published rows keep the paper's own
        # marks, reproduced rows are ranked among themselves), computed from the CSV.
        for ds in dict.fromkeys(r["dataset"] for r in rows):
            for src in ("published", "reproduced"):
                idx = [i for i, r in enumerate(rows) if r["dataset"] == ds and r[c] != ""
                       and (r.get("source", "gmbench") == "gmbench") == (src == "reproduced")]
                if not idx:
                    continue
                best = max(float(rows[i][c]) for i in idx)
                want = [i for i in idx if float(rows[i][c]) == best]
                assert [i for i in idx if cells[i][c].startswith("\\textbf{")] == want, (c, ds)


@pytest.mark.parametrize("name", FIGURES)
def test_figure4_png(name, rendered):
    d, values = rendered[name]
    from PIL import Image
    spec = runner.load_suite(name).table.figure
    png = d / spec.file
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        assert im.size[0] > 300 and im.size[1] > 200
    series = sweep_series(list(values.values()), spec)
    assert list(series) == ["voc2007", "coco2014", "nuswide"]
    for ds, pts in series.items():
        for x, mean, std, n in pts:
            vals = [100 * r["metrics"]["mAP"] for r in values.values() if r["dataset"] == ds and
                    (len(r["config"]["model"]["dims"]) if spec.x_of == "len"
                     else r["config"]["model"]["top_m"]) == x]
            assert n == 3 and mean == pytest.approx(np.mean(vals)) and std == pytest.approx(
                np.std(vals, ddof=1))


def test_merged_rows_need_distinct_datasets_and_qualified_columns():
    base = {"status": "finished", "suite": "s", "method": "m", "metrics": {"mAP": 0.5},
            "per_class_ap": {}, "table": {"columns": ["mAP"], "chance": False}}
    recs = [dict(base, row="a", table_row="T", dataset="voc2007", seed=0),
            dict(base, row="b", table_row="T", dataset="coco2014", seed=0)]
    with pytest.raises(ValueError, match="column 'mAP' must name one"):
        aggregate(recs)
    recs[1]["dataset"] = "voc2007"
    with pytest.raises(ValueError, match="both fill it on dataset 'voc2007'"):
        aggregate(recs)
    recs[1]["dataset"] = "coco2014"
    for r in recs:
        r["table"] = {"columns": ["coco2014/mAP", "voc2007/mAP"], "chance": False}
    recs[0]["metrics"] = {"mAP": 0.25}
    cols, rows = aggregate(recs)
    assert len(rows) == 1 and rows[0]["values"]["voc2007/mAP"][0] == 0.25
    assert rows[0]["values"]["coco2014/mAP"][0] == 0.5 and rows[0]["dataset"] == "voc2007+coco2014"
    assert math.isnan(aggregate([dict(recs[0])])[1][0]["values"]["coco2014/mAP"][0])
