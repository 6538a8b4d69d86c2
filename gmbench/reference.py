"""Published result tables (``results/reference/*.yaml``), transcribed once from papers.

A suite names one published table in ``table.reference`` as ``FILE/TABLE``: FILE is the
stem of a YAML file under the reference directory (``results/reference/`` in the
repository, or ``$GMBENCH_REFERENCE``) or a path to a ``.yaml`` file, and TABLE a key of its
``tables:`` mapping, e.g. ``gm_mlic_ijcai21/table2``. A suite row's ``reference`` names the
published row it reproduces. Values in the files are percentages as printed, ``null`` for
the paper's "-"; :meth:`PublishedTable.value` returns fractions (as run records hold them).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from . import config_files as C
from .utils.resources import reference_dir


class PublishedRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    cite: Optional[str] = None        # as printed next to the name, e.g. "Chen et al., 2019b"
    values: List[Optional[float]]     # percentages in column order; None = not reported
    # Tables compiled from several papers (results/reference/modern_mlic.yaml) say per row
    # where its numbers come from and what they were measured with; a paper's own table
    # has them once, in the table's `source` and the paper's text.
    source: Optional[str] = None      # e.g. "github:Alibaba-MIIL/ASL@8c9e0bd MODEL_ZOO.md"
    backbone: Optional[str] = None    # as the source names it, e.g. "TResNet-L"
    input_size: Optional[int] = None  # square input side in pixels at test time
    pretraining: Optional[str] = None  # only where the source states it

    @property
    def display(self) -> str:
        return f"{self.name} [{self.cite}]" if self.cite else self.name


class PublishedTable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str                       # e.g. "paper/table2"
    title: str = ""
    dataset: Union[str, List[str]]    # gmbench dataset config name(s)
    columns: List[str]                # gmbench column keys (see gmbench/tables.py)
    headers: Dict[str, str] = {}      # column key → the paper's header, where they differ
    groups: Dict[str, List[str]] = {}  # grouped header (e.g. All / Top-3) → its columns
    rows: List[PublishedRow]
    paper: str = ""                   # filled from the file's `paper` by load_table

    @model_validator(mode="after")
    def _consistent(self):
        n = len(self.columns)
        if len(set(self.columns)) != n:
            raise ValueError("a column key appears twice in `columns`")
        for r in self.rows:
            if len(r.values) != n:
                raise ValueError(f"row {r.name!r} has {len(r.values)} values for {n} columns")
        names = [r.name for r in self.rows]
        if len(set(names)) != len(names):
            raise ValueError("a row name appears twice")
        extra = [c for c in list(self.headers) + [c for g in self.groups.values() for c in g]
                 if c not in self.columns]
        if extra:
            raise ValueError(f"headers/groups name columns that are not in `columns`: {extra}")
        return self

    @property
    def caption(self) -> str:
        """The paper's caption without its "Table N:" prefix (a paper numbers its own)."""
        return re.sub(r"^\s*(Table|Figure)\s+\d+[a-z]?\s*[:.]\s*", "", self.title).strip()

    @property
    def short_source(self) -> str:
        """Where the numbers come from, as a reader names it: 'GM-MLIC, Table 2'."""
        m = re.match(r"\s*(Table\s+\d+[a-z]?)", self.title) or re.search(
            r"table\s*(\d+[a-z]?)\s*$", self.source, re.I)
        which = (m.group(1) if m.group(1).startswith("Table") else f"Table {m.group(1)}") if m \
            else ""
        paper = self.paper.split(":", 1)[0].strip()
        return ", ".join(x for x in (paper, which) if x) or self.source

    def row(self, name: str) -> PublishedRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def value(self, name: str, column: str) -> Optional[float]:
        """Published value of row ``name`` in ``column`` as a fraction (84.3 → 0.843), or None."""
        if column not in self.columns:
            return None
        v = self.row(name).values[self.columns.index(column)]
        return None if v is None else v / 100.0


class ReferenceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paper: str
    tables: Dict[str, PublishedTable]


def _split(ref: str):
    if "/" not in ref:
        raise C.ConfigError(f"table.reference {ref!r}: expected FILE/TABLE, "
                            f"e.g. gm_mlic_ijcai21/table2")
    stem, key = ref.rsplit("/", 1)
    path = Path(stem) if stem.endswith((".yaml", ".yml")) else reference_dir() / f"{stem}.yaml"
    return path, key


def load_file(path: Path) -> ReferenceFile:
    if not Path(path).is_file():
        have = sorted(p.stem for p in reference_dir().glob("*.yaml"))
        raise C.ConfigError(f"reference file {path} not found (files in {reference_dir()}: "
                            f"{', '.join(have) or 'none'})")
    try:
        return ReferenceFile.model_validate(C.load_yaml(Path(path)))
    except ValidationError as e:
        raise C.ConfigError(f"{path}:\n" + C._explain(e, ReferenceFile, "")) from None


def load_table(ref: str) -> PublishedTable:
    """The published table ``FILE/TABLE`` (see the module docstring)."""
    path, key = _split(ref)
    doc = load_file(path)
    if key not in doc.tables:
        raise C.ConfigError(f"table.reference {ref!r}: {path} has no table {key!r}; "
                            f"tables: {', '.join(doc.tables)}")
    return doc.tables[key].model_copy(update={"paper": doc.paper})


def check_suite(suite) -> None:
    """Every row's ``reference`` must name a row of the suite's published table."""
    refs = [(r.label, r.reference) for r in suite.rows if r.reference]
    if not suite.table.reference:
        if refs:
            raise C.ConfigError(f"suite {suite.name!r}: row {refs[0][0]!r} has reference "
                                f"{refs[0][1]!r} but the suite has no table.reference")
        return
    table = load_table(suite.table.reference)
    names = [r.name for r in table.rows]
    for label, ref in refs:
        if ref not in names:
            raise C.ConfigError(f"suite {suite.name!r}, row {label!r}: reference {ref!r} is not "
                                f"a row of {suite.table.reference}; rows: {', '.join(names)}")
