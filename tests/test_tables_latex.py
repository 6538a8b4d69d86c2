"""Every generated table and figure compiled by pdflatex in a two-column IJCAI / CVPR page:
no error, no overfull box wider than 1 pt, the width estimate close to TeX's own, and the
pages rendered to PNG (pdftoppm) into $GMBENCH_RENDER_DIR when set, for a human to look at.
Without pdflatex the tests skip, except with CI set, where they fail (tests/latex_page.py)."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gmbench import runner
from gmbench.tables import TableError, build_table, to_latex, write_tables
from gmbench.tables.latex import MIN_TEXT_SCALE, choose_layout, natural_width, _blocks
from gmbench.tables.marks import rank_marks
from gmbench.tables.widths import COLUMN_PT, TEXT_PT, width
from gmbench.utils.io import read_jsonl
from latex_page import compile_page, measure, page, require_pdflatex
from test_paper_suites import FIGURES, SUITES, fabricate

ALL = SUITES


def _render_png(pdf: Path, name: str):
    out = os.environ.get("GMBENCH_RENDER_DIR")
    if out and shutil.which("pdftoppm"):
        Path(out).mkdir(parents=True, exist_ok=True)
        subprocess.run(["pdftoppm", "-png", "-r", "110", "-f", "1", "-l", "2", str(pdf),
                        str(Path(out) / name)], check=True, timeout=120)


def _with_protocol(d: Path):
    """The demo records with the new fields: protocol flags, a detector, skipped images."""
    recs = read_jsonl(d / "runs.jsonl")
    for r in recs:
        if r["method"] == "gm_mlic":
            r["protocol"] = {"test_annotations_used": True, "instance_source": "annotation_boxes",
                             "detector": None}
        else:
            r["protocol"] = {"test_annotations_used": False, "instance_source": "none",
                             "detector": {"weights": "COCO_V1", "trained_on": ["COCO train2017"],
                                          "overlaps_test": r["method"] == "ssgrl"}}
        r["skipped_images"] = {"train": 0, "test": 2 if r["method"] == "resnet" else 0}
    return recs


@pytest.fixture(scope="module")
def suites(tmp_path_factory):
    require_pdflatex()
    out = tmp_path_factory.mktemp("tex")
    done = {}
    for name in ALL:
        d, _ = fabricate(name, out)
        write_tables(d, ("tex",))
        done[name] = d
    return done


def _measured(tex: str, workdir: Path, name: str) -> float:
    """TeX's width of the tabular (boxed, before any scaling) in ``tex``."""
    boxed = tex.replace(r"\begin{tabular}", r"\setbox0\hbox{\begin{tabular}").replace(
        r"\end{tabular}", r"\end{tabular}}\typeout{GMTABW \the\wd0}\box0")
    compile_page(page(boxed), workdir, name)
    log = (workdir / f"{name}.log").read_text(encoding="latin-1")
    return float(re.search(r"GMTABW ([\d.]+)pt", log).group(1))


@pytest.mark.parametrize("name", ALL)
def test_table_compiles_and_fits_a_two_column_page(name, suites, tmp_path):
    tex = (suites[name] / "table.tex").read_text()
    for cvpr in (False, True):
        pdf, errors, over = compile_page(page(tex, cvpr=cvpr), tmp_path, f"{name}-{cvpr}")
        assert errors == [], errors
        assert over == [], over
    _render_png(tmp_path / f"{name}-False.pdf", f"table-{name}")
    # the estimate the layout was chosen with is TeX's width to within 1 %
    est = float(re.search(r"estimated width in Times at \\\w+: (\d+) pt", tex).group(1))
    got = _measured(tex, tmp_path, f"{name}-w")
    assert abs(est - got) <= max(2.0, 0.01 * got), (est, got)
    first = tex.splitlines()[0]
    assert first.startswith(r"% needs \usepackage{booktabs}")
    assert ("graphicx" in first) == ("\\resizebox" in tex)
    assert ("spans both columns" in first) == ("\\begin{table*}" in tex)


@pytest.mark.parametrize("opts", [dict(std="row", delta="row"), dict(std="off", delta="off"),
                                  dict(std="suffix", delta="row"), dict(marks="joint")])
def test_layout_options_compile(opts, suites, tmp_path):
    for name in ("coco_table2", "ablation_table4", "voc_table1"):
        t = build_table(read_jsonl(suites[name] / "runs.jsonl"))
        tex = to_latex(t, **opts)
        _, errors, over = compile_page(page(tex), tmp_path, name)
        assert errors == [] and over == [], (name, opts, errors, over)


def test_protocol_notes_compile(suites, tmp_path):
    """Dagger, detector overlap and skipped images in the demo table, compiled."""
    d = suites["demo"]
    recs = _with_protocol(d)
    tex = to_latex(build_table(recs))
    assert "$^\\dagger$" in tex and "overlaps the test split" in tex
    assert "2 test images skipped as unreadable" in tex
    pdf, errors, over = compile_page(page(tex), tmp_path, "demo-notes")
    assert errors == [] and over == []
    _render_png(pdf, "table-demo-protocol")


@pytest.mark.parametrize("name", FIGURES)
def test_figure_compiles_in_one_column(name, suites, tmp_path):
    spec = runner.load_suite(name).table.figure
    d = suites[name]
    write_tables(d, ())
    stem = Path(spec.file).stem
    for ext in (".pdf", ".svg", ".png"):
        shutil.copy(d / f"{stem}{ext}", tmp_path)
    tex = (d / f"{stem}.tex").read_text()
    assert "Figure 4" not in tex and "\\includegraphics{" in tex
    for cvpr in (True, False):
        pdf, errors, over = compile_page(page(tex, cvpr=cvpr), tmp_path, f"fig-{name}")
        assert errors == [] and over == [], (errors, over)
    _render_png(pdf, f"figure-{name}")
    # included at natural size: the PDF is one column wide, so its 7 pt text stays 7 pt
    box = re.search(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)", (d / f"{stem}.pdf").read_bytes())
    assert float(box.group(1)) == pytest.approx(3.25 * 72)
    assert (d / f"{stem}.svg").read_bytes().lstrip().startswith(b"<?xml")


def test_width_estimate_against_tex(tmp_path):
    """Independent reference: TeX measures the strings the tables are made of."""
    cases = [(r"84.3$\pm$1.2", [("84.3±1.2", "r", "base")]),
             (r"\textbf{84.3$\pm$0.04}", [("84.3±0.04", "b", "base")]),
             (r"{\scriptsize ($-$0.7)}", [("(−0.7)", "r", "scriptsize")]),
             ("MLIC-KD-WSD [Liu et al., 2018]", [("MLIC-KD-WSD [Liu et al., 2018]", "r", "base")]),
             (r"\textit{Reproduced (gmbench)}", [("Reproduced (gmbench)", "i", "base")]),
             (r"GM-MLIC (e2e, annotation boxes)$^\dagger$",
              [("GM-MLIC (e2e, annotation boxes)†", "r", "base")])]
    for size, pt in (("normalsize", 10.0), ("small", 9.0)):
        got = measure([c for c, _ in cases], tmp_path / size, size)
        for (c, segs), g in zip(cases, got):
            assert width(segs, pt) == pytest.approx(g, rel=0.02, abs=0.3), (c, size)


def test_layout_choice_by_width_never_below_085(suites):
    """Table 1 (21 columns) goes to stacked halves in table*; Table 4 stays in one column;
    every layout fits its target and keeps text at >= 0.85 of 10 pt."""
    seen = {}
    for name in ALL:
        t = build_table(read_jsonl(suites[name] / "runs.jsonl"))
        ranked = rank_marks(t.cols, t.rows)
        lay, w = choose_layout(t, ranked)
        assert w * lay.scale <= lay.target + 1e-6
        assert lay.pt * lay.scale >= MIN_TEXT_SCALE * 10 - 1e-9
        assert w == pytest.approx(natural_width(_blocks(t, lay, ranked), lay))
        seen[name] = lay
    assert seen["voc_table1"].env == "table*" and seen["voc_table1"].halves
    assert seen["ablation_table4"].env == "table" and seen["ablation_table4"].target == COLUMN_PT
    assert seen["coco_table2"].env == "table*" and seen["coco_table2"].target == TEXT_PT
    # forcing a layout that cannot fit is a clear error, not an overflowing table
    t1 = build_table(read_jsonl(suites["voc_table1"] / "runs.jsonl"))
    with pytest.raises(TableError, match="--std row or off"):
        to_latex(t1, std="suffix", delta="suffix")


def test_scaling_is_the_last_resort_and_stops_at_085(suites, tmp_path, monkeypatch):
    """On a page a little narrower than the narrowest layout the table is scaled (and says
    it needs graphicx); on a much narrower page it is an error, never tiny type."""
    import gmbench.tables.latex as L
    t = build_table(read_jsonl(suites["coco_table2"] / "runs.jsonl"))
    ranked = rank_marks(t.cols, t.rows)
    narrowest = min(natural_width(_blocks(t, lay, ranked), lay)
                    for lay in L._candidates(t, "auto", "auto") if lay.env == "table*")
    monkeypatch.setattr(L, "COLUMN_PT", 100.0)
    monkeypatch.setattr(L, "TEXT_PT", 0.97 * narrowest)
    lay, _ = choose_layout(t, ranked)
    assert lay.scale == pytest.approx(0.97, abs=1e-6) and lay.env == "table*"
    tex = to_latex(t)
    assert "graphicx" in tex.splitlines()[0] and "\\resizebox{\\linewidth}{!}{%" in tex
    _, errors, over = compile_page(page(tex), tmp_path, "scaled")
    assert errors == [] and over == []
    monkeypatch.setattr(L, "TEXT_PT", 0.8 * narrowest)
    with pytest.raises(TableError, match="below 0.85"):
        to_latex(t)
