"""Issue 13, item 8: malformed annotations are clean errors, never tracebacks.

Each case writes an official-format fixture (``fixtures_official``), damages one thing
and checks that the reader raises an AnnotationError naming the file, the entry and the
bad key or value, and saying what to do; ``gmbench run`` on such data exits 1 with one
``error:`` line.
"""
import json

import pytest
import yaml

from fixtures_official import write_coco, write_nuswide, write_voc
from gmbench.cli import main
from gmbench.data import AnnotationError, read_labels

CATS = [{"id": 1, "name": "person", "supercategory": "person"},
        {"id": 3, "name": "car", "supercategory": "vehicle"}]
IMAGES = [{"id": 9, "width": 32, "height": 24}, {"id": 42, "width": 20, "height": 20}]
ANNS = [{"image_id": 9, "category_id": 1, "bbox": [0, 0, 10, 10]},
        {"image_id": 42, "category_id": 3, "bbox": [1.0, 2.0, 3.0, 4.0]}]
COCO_FILE = "instances_train2014.json"
FIX = "python -m gmbench data check"


def coco(tmp_path, write_images=False):
    root = tmp_path / "coco"
    for split in ("train", "val"):
        write_coco(root, split, CATS, IMAGES, ANNS, write_images=write_images)
    return root


def edit_json(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def pop(section, j, key):
    return lambda d: d[section][j].pop(key)


def put(section, j, key, value):
    return lambda d: d[section][j].__setitem__(key, value)


# (id, how to damage the file: a doc edit or raw bytes, what the message must contain)
COCO_CASES = [
    ("json", b'{"images": [', ["not valid JSON", "line 1"]),
    ("utf8", b'{"images": [], "x": "\xff"}', ["not UTF-8", "0xff", "line 1"]),
    ("top-list", lambda d: d.clear(), ["missing top-level key 'images'"]),
    ("no-categories", lambda d: d.pop("categories"), ["'categories'"]),
    ("annotations-not-list", lambda d: d.__setitem__("annotations", {}), ["'annotations' is a dict"]),
    ("image-id", pop("images", 1, "id"), ["images[1] has no key 'id'"]),
    ("image-file", pop("images", 0, "file_name"), ["images[0] (id 9) has no key 'file_name'"]),
    ("image-width", pop("images", 0, "width"), ["images[0] (id 9) has no key 'width'"]),
    ("image-height", put("images", 1, "height", "20"), ["images[1] (id 42): height = '20'", "integer"]),
    ("image-twice", put("images", 1, "id", 9), ["images[1]: id 9 is also the id of images[0]"]),
    ("image-entry", lambda d: d["images"].append(7), ["images[2] = 7 is not an object"]),
    ("ann-image", pop("annotations", 0, "image_id"), ["annotations[0] (id 1001) has no key 'image_id'"]),
    ("ann-cat", pop("annotations", 1, "category_id"), ["annotations[1] (id 1002) has no key 'category_id'"]),
    ("ann-bbox", pop("annotations", 1, "bbox"), ["annotations[1] (id 1002) has no key 'bbox'"]),
    ("bbox-3", put("annotations", 0, "bbox", [0, 0, 10]), ["annotations[0] (id 1001): bbox = [0, 0, 10]",
                                                          "4 numbers"]),
    ("bbox-str", put("annotations", 1, "bbox", [1, "2", 3, 4]), ["bbox = [1, '2', 3, 4]"]),
    ("bbox-nan", put("annotations", 1, "bbox", [1, float("nan"), 3, 4]), ["annotations[1]", "nan"]),
    ("bbox-null", put("annotations", 0, "bbox", None), ["bbox = None"]),
    ("unknown-image", put("annotations", 1, "image_id", 5), ["annotations[1] (id 1002): image_id 5 is the id of no image"]),
    ("unknown-cat", put("annotations", 0, "category_id", 2), ["category_id 2 is the id of no category"]),
    ("cat-name", pop("categories", 1, "name"), ["categories[1] (id 3) has no key 'name'"]),
    ("cat-id", put("categories", 0, "id", "1"), ["categories[0] (id '1'): id = '1'"]),
]


@pytest.mark.parametrize("damage, expected", [c[1:] for c in COCO_CASES], ids=[c[0] for c in COCO_CASES])
def test_malformed_coco_names_file_entry_and_value(tmp_path, damage, expected):
    root = coco(tmp_path)
    path = root / "annotations" / COCO_FILE
    if isinstance(damage, bytes):
        path.write_bytes(damage)
    else:
        edit_json(path, damage)
    with pytest.raises(AnnotationError) as e:
        read_labels("coco2014", root, "train")
    msg = str(e.value)
    assert str(path) in msg and FIX in msg and "download annotations_trainval2014.zip" in msg
    for part in expected:
        assert part in msg, (part, msg)


def voc(tmp_path):
    return write_voc(tmp_path / "voc", {"test": {
        "000001": [("dog", False, (1, 2, 30, 20)), ("person", True, (5, 5, 9, 9))],
        "000002": [("car", False, (3, 3, 40, 30))]}})


def xml_edit(old, new, count=1):
    return lambda base: _replace(base / "Annotations" / "000001.xml", old, new, count)


def _replace(path, old, new, count):
    data = path.read_bytes()
    assert old in data, old
    path.write_bytes(data.replace(old, new, count))
    return path


def _drop_xml(base):
    (base / "Annotations" / "000002.xml").unlink()
    return base / "ImageSets" / "Main" / "test.txt"


def _main_file(name, content):
    def damage(base):
        p = base / "ImageSets" / "Main" / name
        p.write_bytes(content)
        return p
    return damage


VOC_CASES = [
    ("xml", xml_edit(b"</annotation>", b""), ["000001.xml", "not valid XML", "line"]),
    ("xml-utf8", xml_edit(b"<name>dog", b"<name>d\xe9g"), ["000001.xml", "not valid XML"]),
    ("no-name", xml_edit(b"<name>dog</name>", b""), ["<object> 1 has no <name>"]),
    ("unknown-class", xml_edit(b"<name>dog", b"<name>dragon"), ["<object> 1 has unknown class 'dragon'"]),
    ("no-bndbox", xml_edit(b"bndbox>", b"box>", 2), ["<object> 1 (dog) has no <bndbox>"]),
    ("no-xmax", xml_edit(b"<xmax>30</xmax>", b""), ["<object> 1 (dog) <bndbox> has no <xmax>"]),
    ("ymin-text", xml_edit(b"<ymin>5</ymin>", b"<ymin>abc</ymin>"),
     ["<object> 2 (person) <bndbox>: <ymin> is 'abc', not a number"]),
    ("width-text", xml_edit(b"<width>48</width>", b"<width>wide</width>"), ["<size>: <width> is 'wide'"]),
    ("missing-xml", _drop_xml, ["lists image '000002'", "no 000002.xml", "data.read_boxes=false"]),
    ("class-value", _main_file("dog_test.txt", b"000001  2\n000002 -1\n"), ["dog_test.txt:1", "'000001  2'"]),
    ("list-utf8", _main_file("test.txt", b"000001\n0000\xff2\n"), ["not UTF-8", "0xff on line 2"]),
    ("list-twice", _main_file("test.txt", b"000001\n000001\n"), ["image '000001' is listed twice"]),
]


@pytest.mark.parametrize("damage, expected", [c[1:] for c in VOC_CASES], ids=[c[0] for c in VOC_CASES])
def test_malformed_voc_names_file_entry_and_value(tmp_path, damage, expected):
    root = voc(tmp_path)
    path = damage(root / "VOCdevkit" / "VOC2007")
    with pytest.raises(AnnotationError) as e:
        read_labels("voc2007", root, "test")
    msg = str(e.value)
    assert str(path) in msg, msg
    for part in expected:
        assert part in msg, (part, msg)
    assert "VOCtrainval_06-Nov-2007.tar" in msg or "Extract the Annotations" in msg


def nus(tmp_path):
    return write_nuswide(tmp_path / "nus", ["sky", "dog"], {
        "train": [("sky\\1.jpg", ["sky"]), ("dog\\2.jpg", ["dog"]), ("sky\\3.jpg", [])],
        "test": [("sky\\4.jpg", ["sky"])]}, missing_jpeg=["sky\\1.jpg", "dog\\2.jpg", "sky\\3.jpg",
                                                          "sky\\4.jpg"])


def _nus_file(rel, content):
    def damage(root):
        p = root / rel
        p.write_bytes(content)
        return p
    return damage


LABELS = "Groundtruth/TrainTestLabels/Labels_dog_Train.txt"
NUS_CASES = [
    ("two-columns", _nus_file(LABELS, b"0\r\n1 0\r\n0\r\n"), [":2: 2 values '1 0'"]),
    ("not-0-1", _nus_file(LABELS, b"0\r\n\r\n1\r\nyes\r\n"), [":4: value 'yes'"]),
    ("count", _nus_file(LABELS, b"0\r\n1\r\n"), ["2 labels but the image list has 3 images"]),
    ("concept-twice", _nus_file("ConceptsList/Concepts81.txt", b"sky\r\ndog\r\nsky\r\n"),
     ["concept 'sky' is listed twice"]),
    ("list-columns", _nus_file("ImageList/TrainImagelist.txt", b"sky\\1.jpg 1\r\ndog\\2.jpg\r\nsky\\3.jpg\r\n"),
     ["entry 1 'sky\\\\1.jpg 1' has 2 columns"]),
]


@pytest.mark.parametrize("damage, expected", [c[1:] for c in NUS_CASES], ids=[c[0] for c in NUS_CASES])
def test_malformed_nuswide_names_file_and_value(tmp_path, damage, expected):
    root = nus(tmp_path)
    path = damage(root)
    with pytest.raises(AnnotationError) as e:
        read_labels("nuswide", root, "train")
    msg = str(e.value)
    assert str(path) in msg and f"{FIX} nuswide --root {root}" in msg, msg
    for part in expected:
        assert part in msg, (part, msg)


def test_run_on_malformed_coco_exits_1_with_one_error_line(tmp_path, capsys):
    root = coco(tmp_path, write_images=True)
    path = root / "annotations" / COCO_FILE
    edit_json(path, put("annotations", 1, "bbox", [1, 2, 3]))
    suite = tmp_path / "m.yaml"
    suite.write_text(yaml.safe_dump({"name": "m", "seeds": [0], "rows": [
        {"label": "R", "method": "resnet", "dataset": "coco2014"}],
        "defaults": {"model": {"depth": 18, "pretrained": "none"}}}))
    sets = {"data.root": root, "data.image_size": 32, "train.epochs": 1, "train.batch_size": 2,
            "data.num_workers": 0}
    argv = ["run", "--suite", str(suite), "--out", str(tmp_path / "out")]
    argv += [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert COCO_FILE in lines[0] and "annotations[1] (id 1002): bbox = [1, 2, 3]" in lines[0]
    assert f"{FIX} coco2014 --root {root}" in lines[0]
