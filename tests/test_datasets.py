"""Readers of VOC 2007, COCO 2014 and NUS-WIDE on fixtures in their official formats,
and the data check (missing / truncated JPEGs, counts, exit codes)."""
from __future__ import annotations

import numpy as np
import pytest

from gmbench.data import AnnotationError, get_spec, read_labels
from gmbench.data import check as chk
from gmbench.data.nuswide import normalise_image_path

try:
    from fixtures_official import VOC20, write_coco, write_jpeg, write_nuswide, write_voc
except ImportError:  # tests/ imported as a package
    from tests.fixtures_official import VOC20, write_coco, write_jpeg, write_nuswide, write_voc

# ----------------------------------------------------------------------------- VOC 2007

VOC_TRAINVAL = {
    "000005": [("chair", False, (263, 211, 324, 339)), ("chair", True, (5, 6, 20, 30))],
    "000007": [("car", False, (141, 50, 500, 330))],
    "000009": [("horse", False, (69, 172, 270, 330)), ("person", False, (150, 141, 229, 284)),
               ("person", True, (285, 201, 327, 331))],
    "000012": [("car", True, (156, 97, 351, 270))],  # difficult only → -1
}
VOC_TEST = {"000001": [("dog", False, (48, 240, 195, 371)), ("person", False, (8, 12, 352, 498))],
            "000002": [("train", False, (139, 200, 207, 301))]}


@pytest.fixture
def voc_root(tmp_path):
    return write_voc(tmp_path / "voc", {"trainval": VOC_TRAINVAL, "test": VOC_TEST},
                     missing_jpeg=["000007"], truncated_jpeg=["000009"])


def test_voc_labels_follow_the_per_class_files(voc_root):
    ls = read_labels("voc2007", voc_root, "trainval")
    assert ls.image_ids == ["000005", "000007", "000009", "000012"]
    assert ls.class_names == VOC20 and ls.class_names == sorted(ls.class_names)
    ci = {c: k for k, c in enumerate(VOC20)}
    want = np.zeros((4, 20), np.int8)
    want[0, ci["chair"]] = 1
    want[1, ci["car"]] = 1
    want[2, ci["horse"]] = want[2, ci["person"]] = 1
    want[3, ci["car"]] = -1
    assert ls.targets.dtype == np.int8
    np.testing.assert_array_equal(ls.targets, want)
    assert ls.image_paths[0] == voc_root / "VOCdevkit/VOC2007/JPEGImages/000005.jpg"


def test_voc_boxes_and_sizes_from_xml(voc_root):
    ls = read_labels("voc2007", voc_root, "test")
    assert ls.image_ids == ["000001", "000002"]
    np.testing.assert_array_equal(ls.boxes[0], [[48, 240, 195, 371], [8, 12, 352, 498]])
    np.testing.assert_array_equal(ls.box_labels[0], [VOC20.index("dog"), VOC20.index("person")])
    np.testing.assert_array_equal(ls.sizes, [[48, 40], [48, 40]])
    tv = read_labels("voc2007", voc_root, "trainval")
    assert len(tv.boxes[3]) == 1 and tv.box_labels[3][0] == VOC20.index("car")  # difficult kept


@pytest.mark.parametrize("sub", ["", "VOCdevkit", "VOCdevkit/VOC2007"])
def test_voc_root_may_be_any_level(voc_root, sub):
    assert len(read_labels("voc2007", voc_root / sub if sub else voc_root, "test")) == 2


def test_voc_bad_files_name_the_file(voc_root):
    main = voc_root / "VOCdevkit/VOC2007/ImageSets/Main"
    (main / "dog_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="dog_test.txt"):
        read_labels("voc2007", voc_root, "test")
    (main / "dog_test.txt").write_text("000001  2\n000002 -1\n")
    with pytest.raises(ValueError, match=r"dog_test.txt:1"):
        read_labels("voc2007", voc_root, "test")
    (main / "dog_test.txt").write_text("000001  1\n")
    with pytest.raises(ValueError, match="no label for image"):
        read_labels("voc2007", voc_root, "test")
    with pytest.raises(ValueError, match="no split"):
        read_labels("voc2007", voc_root, "val2014")


def test_voc_without_boxes_needs_no_xml(voc_root):
    for p in (voc_root / "VOCdevkit/VOC2007/Annotations").glob("*.xml"):
        p.unlink()
    ls = read_labels("voc2007", voc_root, "test", read_boxes=False)
    assert ls.boxes is None and len(ls) == 2
    with pytest.raises(AnnotationError, match="test.txt lists image '000001'.*000001.xml"):
        read_labels("voc2007", voc_root, "test")

# ----------------------------------------------------------------------------- COCO 2014

# Listed out of id order, ids with gaps (as in the real file's 1..90).
COCO_CATS = [{"id": 90, "name": "toothbrush", "supercategory": "indoor"},
             {"id": 1, "name": "person", "supercategory": "person"},
             {"id": 13, "name": "stop sign", "supercategory": "outdoor"},
             {"id": 3, "name": "car", "supercategory": "vehicle"}]
COCO_IMAGES = [{"id": 391895, "width": 40, "height": 30}, {"id": 9, "width": 32, "height": 24},
               {"id": 42, "width": 20, "height": 20},  # no annotation
               {"id": 118113, "width": 36, "height": 28}]
COCO_ANNS = [{"image_id": 9, "category_id": 90, "bbox": [1.0, 2.0, 3.0, 4.0]},
             {"image_id": 9, "category_id": 1, "bbox": [0, 0, 10, 10]},
             {"image_id": 391895, "category_id": 13, "bbox": [5, 5, 2.5, 2]},
             {"image_id": 118113, "category_id": 3, "bbox": [0, 0, 1, 1]},
             {"image_id": 118113, "category_id": 3, "bbox": [2, 2, 1, 1]}]


@pytest.fixture
def coco_root(tmp_path):
    root = tmp_path / "coco"
    write_coco(root, "train", COCO_CATS, COCO_IMAGES, COCO_ANNS)
    write_coco(root, "val", COCO_CATS, COCO_IMAGES[:2], COCO_ANNS[:3], write_images=False)
    return root


def test_coco_id_order_and_dropping_empty_images(coco_root):
    ls = read_labels("coco2014", coco_root, "train")
    assert ls.class_names == ["person", "car", "stop sign", "toothbrush"]  # ids 1, 3, 13, 90
    # ascending numeric id; 42 has no annotation
    assert ls.image_ids == ["9", "118113", "391895"]
    np.testing.assert_array_equal(ls.targets, [[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]])
    assert ls.image_paths[0] == coco_root / "train2014" / "COCO_train2014_000000000009.jpg"
    np.testing.assert_allclose(ls.boxes[0], [[1, 2, 4, 6], [0, 0, 10, 10]])  # xywh → xyxy
    np.testing.assert_array_equal(ls.box_labels[0], [3, 0])
    np.testing.assert_array_equal(ls.box_labels[1], [1, 1])
    np.testing.assert_array_equal(ls.sizes, [[32, 24], [36, 28], [40, 30]])


def test_coco_name_order_and_keep_empty(coco_root):
    ls = read_labels("coco2014", coco_root, "train", class_order="name", keep_empty=True)
    assert ls.class_names == ["car", "person", "stop sign", "toothbrush"]
    assert ls.image_ids == ["9", "42", "118113", "391895"]
    np.testing.assert_array_equal(ls.targets[1], [0, 0, 0, 0])
    np.testing.assert_array_equal(ls.targets[0], [0, 1, 0, 1])
    assert len(ls.boxes[1]) == 0
    assert len(read_labels("coco2014", coco_root, "val")) == 2


def test_coco_options_are_validated(coco_root):
    with pytest.raises(ValueError, match="class_order"):
        read_labels("coco2014", coco_root, "train", class_order="alphabet")
    with pytest.raises(ValueError, match="keep_emtpy"):
        read_labels("coco2014", coco_root, "train", keep_emtpy=True)
    with pytest.raises(FileNotFoundError, match="instances_val2014.json"):
        (coco_root / "annotations" / "instances_val2014.json").unlink()
        read_labels("coco2014", coco_root, "val")


def test_coco_expected_counts_follow_keep_empty():
    from gmbench.data import data_config
    spec = get_spec("coco2014")
    assert spec.expected_counts_for(data_config("coco2014")) == {"train": 82081, "val": 40137}
    assert spec.expected_counts_for(data_config("coco2014", keep_empty=True)) == \
        {"train": 82783, "val": 40504}
    assert data_config("coco2014").test_split == "val"

# ----------------------------------------------------------------------------- NUS-WIDE

NUS_CONCEPTS = ["zebra", "airport", "sky"]  # file order, deliberately not alphabetical
NUS_SPLITS = {
    "train": [("actor\\0001_2124494179.jpg", ["sky"]),
              ("airport\\0002_1.jpg", ["airport", "sky"]),
              ("actor\\0003_9.jpg", []),  # no label
              ("zebra\\0004_7.jpg", ["zebra"])],
    "test": [("sky\\0005_3.jpg", ["sky", "zebra"]), ("sky\\0006_4.jpg", [])],
}


@pytest.fixture
def nus_root(tmp_path):
    return write_nuswide(tmp_path / "nus", NUS_CONCEPTS, NUS_SPLITS, crlf=True)


def test_nuswide_reads_crlf_backslash_files(nus_root):
    raw = (nus_root / "ImageList" / "TrainImagelist.txt").read_bytes()
    assert b"\r\n" in raw and b"\\" in raw  # the fixture really is in the Windows form
    ls = read_labels("nuswide", nus_root, "train")
    assert ls.class_names == NUS_CONCEPTS
    assert ls.image_ids == ["actor/0001_2124494179.jpg", "airport/0002_1.jpg",
                            "actor/0003_9.jpg", "zebra/0004_7.jpg"]
    np.testing.assert_array_equal(ls.targets, [[0, 0, 1], [0, 1, 1], [0, 0, 0], [1, 0, 0]])
    assert ls.image_paths[1] == nus_root / "Flickr" / "airport" / "0002_1.jpg"
    te = read_labels("nuswide", nus_root, "test")
    np.testing.assert_array_equal(te.targets, [[1, 0, 1], [0, 0, 0]])


def test_nuswide_drop_unlabeled_and_concepts_at_root(tmp_path):
    root = write_nuswide(tmp_path / "n2", NUS_CONCEPTS, NUS_SPLITS, crlf=False,
                         concepts_in_folder=False)
    ls = read_labels("nuswide", root, "train", drop_unlabeled=True)
    assert ls.image_ids == ["actor/0001_2124494179.jpg", "airport/0002_1.jpg", "zebra/0004_7.jpg"]
    assert (ls.targets.max(axis=1) == 1).all()
    assert len(read_labels("nuswide", root, "test", drop_unlabeled=True)) == 1
    spec = get_spec("nuswide")
    from gmbench.data import data_config
    assert spec.expected_counts_for(data_config("nuswide")) == {"train": 161789, "test": 107859}
    assert spec.expected_counts_for(data_config("nuswide", drop_unlabeled=True)) == {}


def test_nuswide_misaligned_label_file_is_named(nus_root):
    p = nus_root / "Groundtruth/TrainTestLabels/Labels_sky_Train.txt"
    p.write_bytes(b"1\r\n0\r\n")
    with pytest.raises(ValueError, match=r"Labels_sky_Train.txt: 2 labels .* 4 images"):
        read_labels("nuswide", nus_root, "train")
    p.write_bytes(b"1\r\n1\r\n0\r\nx\r\n")
    with pytest.raises(ValueError, match="'x'"):
        read_labels("nuswide", nus_root, "train")


def test_nuswide_path_normalisation():
    assert normalise_image_path("actor\\0001_2.jpg\r") == "actor/0001_2.jpg"
    assert normalise_image_path(r"C:\ImageData\Flickr\actor\0001_2.jpg") == "actor/0001_2.jpg"

# ----------------------------------------------------------------------------- data check


def test_check_image_detects_truncated_and_non_images(tmp_path):
    ok = write_jpeg(tmp_path / "ok.jpg", (64, 64))
    bad = write_jpeg(tmp_path / "cut.jpg", (64, 64), truncated=True)
    txt = tmp_path / "x.jpg"
    txt.write_text("not an image")
    assert chk.check_image(str(ok)) is None
    assert "truncated" in chk.check_image(str(bad)).lower()
    assert chk.check_image(str(txt)) is not None
    assert chk.check_image(str(tmp_path / "none.jpg")) == "missing"


def _cli(argv):
    from gmbench.cli import main  # the real `python -m gmbench` entry point
    return main(argv)


def test_check_reports_every_bad_file_and_mismatch(voc_root, capsys):
    reps = chk.check_dataset("voc2007", voc_root, workers=1)
    tv, te = reps
    assert (tv.split, tv.listed, tv.found) == ("trainval", 4, 3)
    jpegs = voc_root / "VOCdevkit/VOC2007/JPEGImages"
    assert tv.missing == [str(jpegs / "000007.jpg")]
    assert [p for p, _ in tv.unreadable] == [str(jpegs / "000009.jpg")]
    assert tv.class_counts[VOC20.index("car")] == 1 and tv.ignored_counts[VOC20.index("car")] == 1
    assert tv.labels_per_image == {"mean": 1.0, "min": 0, "max": 2, "no_positive": 1,
                                   "ignored_entries": 1}
    assert any("official count is 5011" in p for p in tv.problems)
    assert te.missing == [] and te.unreadable == [] and te.expected == 4952
    assert _cli(["data", "check", "voc2007", "--root", str(voc_root), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "000007.jpg" in out and "000009.jpg" in out and "official 5011" in out


def test_check_passes_when_everything_matches(tmp_path, monkeypatch, capsys):
    root = write_voc(tmp_path / "v", {"trainval": VOC_TRAINVAL, "test": VOC_TEST})
    spec_cls = type(get_spec("voc2007"))
    monkeypatch.setattr(spec_cls, "expected_counts", {"trainval": 4, "test": 2})
    assert _cli(["data", "check", "voc2007", "--root", str(root)]) == 0
    assert "OK: no problems found" in capsys.readouterr().out
    write_jpeg(root / "VOCdevkit/VOC2007/JPEGImages/000002.jpg", truncated=True)
    assert _cli(["data", "check", "voc2007", "--root", str(root), "--split", "test"]) == 1
    # --no-decode only tests existence, so the truncated file passes
    assert _cli(["data", "check", "voc2007", "--root", str(root), "--no-decode"]) == 0


def test_check_nuswide_and_coco_bad_files(nus_root, coco_root, tmp_path):
    write_jpeg(nus_root / "Flickr/actor/0003_9.jpg", truncated=True)
    (nus_root / "Flickr/sky/0006_4.jpg").unlink()
    tr, te = chk.check_dataset("nuswide", nus_root, workers=1)
    assert [p for p, _ in tr.unreadable] == [str(nus_root / "Flickr/actor/0003_9.jpg")]
    assert te.missing == [str(nus_root / "Flickr/sky/0006_4.jpg")]
    assert any("3 classes, the official count is 81" in p for p in tr.problems)
    tr, va = chk.check_dataset("coco2014", coco_root, workers=1, keep_empty=True)
    assert tr.listed == 4 and tr.found == 4 and tr.expected == 82783
    assert va.found == 0 and len(va.missing) == 2  # val images were never written


def test_check_missing_annotations_is_an_error_not_a_crash(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _cli(["data", "check", "coco2014", "--root", str(tmp_path / "empty")]) == 1
    out = capsys.readouterr().out
    assert "instances_train2014.json" in out and "ERROR" in out
    assert _cli(["data", "check", "coco2014", "--root", str(tmp_path), "-o", "bogus=1"]) == 2


def test_check_parallel_scan_matches_serial(tmp_path):
    paths = []
    for k in range(300):
        p = tmp_path / f"{k}.jpg"
        if k % 97 == 5:
            write_jpeg(p, (24, 24), seed=k, truncated=True)
        elif k % 89 != 7:
            write_jpeg(p, (24, 24), seed=k)
        paths.append(str(p))
    serial = chk.scan_images(paths, workers=1)
    assert chk.scan_images(paths, workers=2) == serial
    assert sum(s == "missing" for s in serial) == 4 and \
        sum(s not in (None, "missing") for s in serial) == 4



def test_nuswide_duplicate_listing_keeps_rows_aligned(tmp_path):
    rows = [("a\\1.jpg", ["sky"]), ("a\\1.jpg", []), ("b\\2.jpg", ["zebra"])]
    root = write_nuswide(tmp_path / "d", NUS_CONCEPTS, {"train": rows})
    with pytest.warns(UserWarning, match="listed more than once"):
        ls = read_labels("nuswide", root, "train")
    np.testing.assert_array_equal(ls.targets, [[0, 0, 1], [0, 0, 0], [1, 0, 0]])
