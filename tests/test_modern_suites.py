"""The modern suites (coco_modern, voc_modern), their published rows, and the demo's new rows.
Dry runs and table rendering of the modern suites: tests/test_paper_suites.py (MODERN)."""
import pytest

from gmbench import config as C
from gmbench import runner
from gmbench.reference import load_file, load_table, reference_dir

MODERN = {"coco_modern": "coco2014", "voc_modern": "voc2007"}
NEW_METHODS = {"csra", "q2l", "asl", "ml_decoder"}
BLOCK1 = {"resnet", "ml_gcn", "ssgrl", "csra", "q2l", "asl", "ml_decoder", "gm_mlic"}


def test_modern_reference_file_loads_and_every_row_says_where_and_how():
    doc = load_file(reference_dir() / "modern_mlic.yaml")
    assert set(doc.tables) == set(MODERN.values())
    for key, table in doc.tables.items():
        assert table.dataset == key and table.columns[0] == "mAP"
        for row in table.rows:
            assert row.backbone and row.input_size in (448, 576), row.name
            assert row.source and row.cite, row.name
            assert row.values[0] is not None, row.name       # every row has its mAP
            # the name shows the backbone and size a reader needs to compare rows
            assert f"{row.input_size})" in row.name


def test_rows_copied_from_gm_mlic_equal_the_paper_file():
    """Rows whose source is a GM-MLIC table repeat that table's numbers exactly."""
    for key, paper_table in (("coco2014", "table2"), ("voc2007", "table1")):
        modern, paper = load_table(f"modern_mlic/{key}"), load_table(f"gm_mlic_ijcai21/{paper_table}")
        copied = [r for r in modern.rows if r.source.startswith("GM-MLIC (IJCAI-21)")]
        assert len(copied) == 4
        for r in copied:
            want = r.source.split("row ", 1)[1].split(";")[0]
            for c in modern.columns:
                assert r.values[modern.columns.index(c)] == (
                    paper.row(want).values[paper.columns.index(c)] if c in paper.columns else None)


def test_published_values_as_checked_against_the_repositories():
    """The issue's examples, as found in the authors' READMEs (results/reference/modern_mlic.yaml)."""
    coco, voc = load_table("modern_mlic/coco2014"), load_table("modern_mlic/voc2007")
    assert coco.value("Q2L (ResNet-101, 448)", "mAP") == pytest.approx(0.849)
    assert coco.value("CSRA (ResNet-101, 448)", "mAP") == pytest.approx(0.833)
    assert voc.value("CSRA (ResNet-101, 448)", "mAP") == pytest.approx(0.947)
    assert coco.value("ASL (TResNet-L, 448)", "mAP") == pytest.approx(0.866)
    assert coco.value("ML-Decoder (TResNet-L, 448)", "mAP") == pytest.approx(0.901)


@pytest.mark.parametrize("name", MODERN)
def test_modern_suite_blocks(name):
    suite = runner.load_suite(name)
    runs = runner.plan(suite, {})
    assert suite.seeds == [0, 1, 2] and {r.row.dataset for r in runs} == {MODERN[name]}
    block1 = [r for r in runs if "(own" not in r.row.label]
    own = [r for r in runs if "(own" in r.row.label]
    assert {r.row.method for r in block1} == BLOCK1          # every method at ResNet-101 / 448
    for r in block1:
        cfg = C.to_dict(r.cfg)
        assert cfg["data"]["image_size"] == 448, r.row.label
        if r.row.method == "gm_mlic":
            assert cfg["model"]["features"] == "views" and cfg["model"]["detector_weights"] == "coco"
        else:
            assert cfg["model"]["depth"] == 101 and cfg["model"]["backbone"] is None, r.row.label
            assert cfg["model"]["pretrained"] == "imagenet", r.row.label
    assert {r.row.method for r in own} >= {"q2l", "asl", "ml_decoder"}
    for r in own:
        backbone = r.cfg.model.backbone
        assert backbone is None or backbone.startswith("timm/tresnet_"), r.row.label
        assert r.cfg.model.pretrained != "none", r.row.label
    pub = load_table(suite.table.reference)
    for row in suite.rows:            # a published row at the same backbone and input size
        if row.reference:
            published = pub.row(row.reference)
            run = next(r for r in runs if r.row.label == row.label)
            assert published.input_size == run.cfg.data.image_size, row.label
            tag = (run.cfg.model.backbone or "").removeprefix("timm/tresnet_").upper()
            assert published.backbone.endswith(f"TResNet-{tag}" if tag else "ResNet-101") or \
                row.method == "gm_mlic", row.label


def test_csra_rows_use_the_authors_heads_and_lambda_per_dataset():
    coco = next(r for r in runner.plan(runner.load_suite("coco_modern"), {})
                if r.row.method == "csra")
    voc = next(r for r in runner.plan(runner.load_suite("voc_modern"), {})
               if r.row.method == "csra")
    assert (coco.cfg.model.heads, coco.cfg.model.lam, coco.cfg.optim.step_size) == (4, 0.5, 5)
    assert (voc.cfg.model.heads, voc.cfg.model.lam, voc.cfg.optim.step_size) == (1, 0.1, 4)


def test_demo_has_the_new_methods_at_its_small_size():
    suite = runner.load_suite("demo")
    runs = runner.plan(suite, {})
    assert NEW_METHODS <= {r.row.method for r in runs}
    for r in runs:
        if r.row.method in NEW_METHODS:
            m = r.cfg.model
            # the demo's trunks start from the synthetic pretraining (its stand-in for ImageNet)
            assert (m.depth, m.pretrained, m.backbone) == (18, "synthetic", None), r.row.label
            assert r.cfg.data.image_size == 64 and r.cfg.data.name == "synthetic"
            assert r.cfg.train.epochs == suite.defaults["train"]["epochs"]
