"""Compile generated tables and figures with pdflatex inside a two-column paper page.

The page is IJCAI-sized (7 in text, 3.33 in columns, 10 pt Times via mathptmx); ``cvpr=True``
gives CVPR's (6.875 in text, 0.3125 in gap). ``compile_page`` returns the log's errors and
the overfull boxes wider than ``tolerance`` pt. Without pdflatex: ``require_pdflatex`` skips
the test, or fails it when the environment variable CI is set (CI must not skip it).
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

FILLER = ("Multi-label image classification assigns every label that applies to an image. "
          "This paragraph only fills the page around the float. ") * 6


def require_pdflatex() -> str:
    exe = shutil.which("pdflatex")
    if exe:
        return exe
    msg = ("pdflatex not found: the LaTeX compile tests need texlive-latex-base, "
           "texlive-latex-recommended, texlive-fonts-recommended and texlive-latex-extra "
           "(apt-get install -y --no-install-recommends ...; .ci/run installs them)")
    if os.environ.get("CI"):
        pytest.fail("CI is set and " + msg)
    pytest.skip(msg)


def page(body: str, cvpr: bool = False) -> str:
    geo = ("text={6.875in,8.875in},columnsep=0.3125in" if cvpr
           else "text={7in,9.25in},columnsep=0.34in")
    return "\n".join([
        r"\documentclass[twocolumn,10pt]{article}",
        rf"\usepackage[letterpaper,{geo}]{{geometry}}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage{mathptmx}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        r"\pagestyle{empty}",
        r"\begin{document}",
        body,
        FILLER, "", FILLER, "", FILLER,
        r"\end{document}", ""])


def compile_page(tex: str, workdir: Path, name: str = "page", tolerance: float = 1.0):
    """Run pdflatex (batch mode) on ``tex``; returns (pdf path, errors, overfull list)."""
    exe = require_pdflatex()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"{name}.tex").write_text(tex, encoding="utf-8")
    res = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"],
                         cwd=workdir, capture_output=True, text=True, timeout=120)
    log = (workdir / f"{name}.log").read_text(encoding="latin-1")
    errors = [ln for ln in log.splitlines() if ln.startswith("!")]
    if res.returncode != 0 and not errors:
        errors = [f"pdflatex exited {res.returncode}"]
    over = [(float(m.group(2)), m.group(0)) for m in
            re.finditer(r"Overfull \\([hv])box \(([\d.]+)pt too (?:wide|high)\)[^\n]*", log)]
    return workdir / f"{name}.pdf", errors, [o for w, o in over if w > tolerance]


def measure(strings, workdir: Path, size: str = "normalsize"):
    """Widths in pt, as pdflatex sets them in the page's font, of LaTeX snippets."""
    exe = require_pdflatex()
    lines = [r"\newlength\gmw"]
    for i, s in enumerate(strings):
        lines.append(rf"\settowidth\gmw{{\{size} {s}}}\typeout{{GMW {i} \the\gmw}}")
    tex = page("\n".join(lines))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "measure.tex").write_text(tex, encoding="utf-8")
    subprocess.run([exe, "-interaction=nonstopmode", "measure.tex"], cwd=workdir,
                   capture_output=True, text=True, timeout=120)
    log = (workdir / "measure.log").read_text(encoding="latin-1")
    found = {int(i): float(w) for i, w in re.findall(r"GMW (\d+) ([\d.]+)pt", log)}
    return [found[i] for i in range(len(strings))]
