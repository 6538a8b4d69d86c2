"""`gmbench fetch` end to end against a local server standing in for the official hosts:
VOC 2007 / COCO 2014 archives built in their official layouts (fixtures_official), a GloVe
zip, and stand-ins for torchvision's weight files; then `data check`, and `run --offline`.

The catalogue is pointed at the test server by replacing each entry's URL, size and checksum
with those of the fixture file (dataclasses.replace on gmbench.data.sources.ARCHIVES, and
on what gmbench.models.hub_files.weights_archive returns). The weight stand-ins keep the real
hub-cache file names (that is where `run` looks), so their checksum is the stand-in's full
sha256, not torchvision's prefix: they are not torchvision's weights and are never loaded.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from gmbench import cli
from gmbench.data import sources
from gmbench.models import hub_files
from gmbench.utils import download as dl

try:
    from fixtures_official import write_coco, write_glove, write_voc
    from http_fixture import FileServer
except ImportError:  # tests/ imported as a package
    from tests.fixtures_official import write_coco, write_glove, write_voc
    from tests.http_fixture import FileServer

VOC_TRAINVAL = {"000005": [("chair", False, (2, 3, 30, 30))], "000007": [("car", False, (1, 1, 20, 20))]}
VOC_TEST = {"000001": [("dog", False, (4, 4, 40, 30))], "000002": [("train", True, (3, 3, 9, 9))]}
CATS = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]


def _tar_of(folder: Path, top: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        t.add(folder / top, arcname=top)
    return buf.getvalue()


def _zip_of(folder: Path, top: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted((folder / top).rglob("*")):
            z.write(p, p.relative_to(folder).as_posix())
    return buf.getvalue()


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    """{file name: bytes} of every archive, in the official layouts."""
    t = tmp_path_factory.mktemp("official")
    files = {"VOCtrainval_06-Nov-2007.tar": _tar_of(write_voc(t / "tv", {"trainval": VOC_TRAINVAL}), "VOCdevkit"),
             "VOCtest_06-Nov-2007.tar": _tar_of(write_voc(t / "te", {"test": VOC_TEST}), "VOCdevkit")}
    coco = t / "coco"
    write_coco(coco, "train", CATS, [{"id": 9, "width": 40, "height": 32}],
               [{"image_id": 9, "category_id": 1, "bbox": [1, 2, 10, 12]}])
    write_coco(coco, "val", CATS, [{"id": 42, "width": 36, "height": 40}],
               [{"image_id": 42, "category_id": 3, "bbox": [3, 3, 8, 8]}])
    for name, top in (("annotations_trainval2014.zip", "annotations"),
                      ("train2014.zip", "train2014"), ("val2014.zip", "val2014")):
        files[name] = _zip_of(coco, top)
    g = write_glove(t / "g" / "glove.6B.300d.txt", {"chair": [0.1] * 300, "car": [0.2] * 300})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.write(g, "glove.6B.300d.txt")
        z.writestr("glove.6B.50d.txt", "chair " + " ".join(["0.1"] * 50) + "\n")
    files["glove.6B.zip"] = buf.getvalue()
    for e in hub_files.known_enums():  # stand-in state dicts under the real file names
        b = io.BytesIO()
        torch.save({"w": torch.full((2,), float(len(e.url)))}, b)
        files[Path(e.url).name] = b.getvalue()
    return files


def _entry(a, server, files):
    data = files[a.name]
    return dataclasses.replace(a, url=server.url("/official/" + a.name), size=len(data),
                               size_exact=True, mirrors=(),
                               checksum="sha256:" + hashlib.sha256(data).hexdigest())


@pytest.fixture
def world(tmp_path, monkeypatch, fixture_files):
    """cwd = a fresh folder (the suites' data/... paths are relative), TORCH_HOME inside it,
    the catalogue served by a local server; no proxy; offline off (restored afterwards)."""
    for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv(dl.OFFLINE_ENV, "0")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    with FileServer({"/official/" + n: b for n, b in fixture_files.items()}) as server:
        monkeypatch.setattr(sources, "ARCHIVES", {n: _entry(a, server, fixture_files)
                                                  for n, a in sources.ARCHIVES.items()
                                                  if n in fixture_files})
        real = hub_files.weights_archive
        monkeypatch.setattr(hub_files, "weights_archive",
                            lambda e: _entry(real(e), server, fixture_files))
        from gmbench.data import coco, voc
        monkeypatch.setattr(voc.VOC2007, "expected_counts", {"trainval": 2, "test": 2})
        monkeypatch.setattr(coco.COCO2014, "expected_counts_for",
                            lambda self, cfg: {"train": 1, "val": 1})
        from gmbench.data import check
        monkeypatch.setitem(check.EXPECTED_CLASSES, "coco2014", len(CATS))
        yield server


def test_fetch_voc_table1_then_run_offline_reports_nothing_missing(world, tmp_path, capsys):
    assert cli.main(["run", "--suite", "voc_table1", "--dry-run", "--offline"]) == 1
    err = capsys.readouterr().err
    assert "python -m gmbench fetch --suite voc_table1" in err
    assert "ImageSets/Main/trainval.txt" in err and "resnet101-63fe2227.pth" in err
    assert world.log == []  # offline: nothing was requested
    os.environ[dl.OFFLINE_ENV] = "0"  # --offline set it for this process; fetch may download

    assert cli.main(["fetch", "--suite", "voc_table1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "OK: no problems found" in out  # the data check after unpacking
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    assert sorted(p.name for p in hub.iterdir()) == ["fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
                                                     "resnet101-63fe2227.pth"]
    devkit = tmp_path / "data" / "voc2007" / "VOCdevkit" / "VOC2007"
    assert (devkit / "JPEGImages" / "000001.jpg").is_file() and (devkit / "Annotations" / "000005.xml").is_file()
    assert (tmp_path / "data" / "glove" / "glove.6B.300d.txt").is_file()
    assert not (tmp_path / "data" / "glove" / "glove.6B.50d.txt").exists()  # only the 300-d member
    fetched = sorted((tmp_path / "data" / "voc2007" / ".gmbench-fetch").iterdir())
    assert [p.name for p in fetched] == ["VOCtest_06-Nov-2007.tar.done",
                                         "VOCtrainval_06-Nov-2007.tar.done"]  # archives deleted

    assert cli.main(["run", "--suite", "voc_table1", "--dry-run", "--offline"]) == 0
    out = capsys.readouterr().out
    assert "MISSING" not in out and "every file the runs read is on disk" in out
    n = len(world.log)
    assert cli.main(["fetch", "--suite", "voc_table1", "--no-progress"]) == 0  # all present
    assert len(world.log) == n and "total download: 0 B in 0 file(s)" in capsys.readouterr().out


def test_a_tampered_archive_is_rejected_and_nothing_is_left(world, tmp_path, capsys, monkeypatch):
    name = "VOCtest_06-Nov-2007.tar"
    good = world.files["/official/" + name]
    world.files["/official/" + name] = good[:5000] + bytes([good[5000] ^ 1]) + good[5001:]
    assert cli.main(["fetch", "voc2007", "--root", "vocroot", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"could not fetch {name}" in err and world.url("/official/" + name) in err
    assert "does not verify" in err and "deleted" in err
    left = sorted(p.name for p in (tmp_path / "vocroot" / ".gmbench-fetch").iterdir())
    assert left == ["VOCtrainval_06-Nov-2007.tar.done"]  # no test tar, .part or .from
    assert not (tmp_path / "vocroot" / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").exists()


def test_fetch_coco_then_data_check_passes(world, tmp_path, capsys):
    assert cli.main(["fetch", "coco2014", "--root", "coco", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "== coco2014 / train" in out and "OK: no problems found" in out
    assert (tmp_path / "coco" / "annotations" / "instances_val2014.json").is_file()
    assert (tmp_path / "coco" / "train2014" / "COCO_train2014_000000000009.jpg").is_file()


def test_an_archive_copied_by_hand_is_used_from_a_folder(world, tmp_path, fixture_files):
    hand = tmp_path / "usb"
    hand.mkdir()
    for n in ("VOCtrainval_06-Nov-2007.tar", "VOCtest_06-Nov-2007.tar"):
        (hand / n).write_bytes(fixture_files[n])
    assert cli.main(["fetch", "voc2007", "--root", "v", "--from", str(hand), "--no-progress"]) == 0
    assert world.log == []


def test_offline_run_names_the_missing_file_and_the_fetch_command(world, tmp_path, capsys):
    code = cli.main(["run", "--suite", "voc_table1", "--offline", "--set", "data.root=/nowhere/voc"])
    assert code == 1
    err = capsys.readouterr().err
    assert "/nowhere/voc/VOCdevkit/VOC2007/ImageSets/Main/test.txt" in err
    assert "python -m gmbench fetch --suite voc_table1 --set data.root=/nowhere/voc" in err
    assert world.log == [] and not (tmp_path / "results").exists()


def test_offline_weights_load_fails_with_the_fetch_command(world, monkeypatch):
    from torchvision.models import ResNet18_Weights

    from gmbench.models.weights import WeightsError, hub_state_dict
    monkeypatch.setenv(dl.OFFLINE_ENV, "1")
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("downloaded in offline mode"))
    with pytest.raises(WeightsError, match=r"GMBENCH_OFFLINE=1 forbids.*gmbench fetch "
                                           r"ResNet18_Weights.IMAGENET1K_V1"):
        hub_state_dict(ResNet18_Weights.IMAGENET1K_V1)


def test_nuswide_is_not_fetched_and_the_official_instructions_are_printed(world, capsys):
    assert cli.main(["fetch", "nuswide", "--root", "nus"]) == 1
    out = capsys.readouterr().out
    assert "lms.comp.nus.edu.sg" in out and "Agreement and Disclaimer Form" in out
    assert cli.main(["fetch", "--suite", "nuswide_table3", "--dry-run"]) == 0
    out = capsys.readouterr().out  # every row reads NUS-WIDE: said once, not per run
    assert out.count("[cannot fetch] dataset nuswide") == 1 and out.count("Agreement and") == 1
    assert world.log == []


def test_coco_table2_dry_run_lists_files_sizes_sources_checksums_and_the_total(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["fetch", "--suite", "coco_table2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    names = ["annotations_trainval2014.zip", "train2014.zip", "val2014.zip", "glove.6B.zip"]
    total = 0
    for n in names:
        a = sources.ARCHIVES[n]
        assert f"{n}  {dl.human_size(a.size)}  {a.url}" in out and a.checksum in out
        total += a.size
    for e in ("ResNet101_Weights", "FasterRCNN_ResNet50_FPN_Weights"):
        a = hub_files.weights_archive(hub_files.enum_by_name(f"{e}.{'COCO_V1' if 'RCNN' in e else 'IMAGENET1K_V1'}"))
        assert a.url in out and a.checksum in out and a.checksum.startswith("sha256-prefix:")
        total += a.size
    # 13,510,573,713 B (train2014.zip, TFDS) alone is 13.5 GB
    assert "train2014.zip  13.5 GB" in out
    assert f"total download: {dl.human_size(total)} in 6 file(s)" in out
    assert not (tmp_path / "data").exists()  # a dry run writes nothing


def test_a_voc_copy_rooted_at_its_devkit_folder_counts_as_present(tmp_path):
    root = write_voc(tmp_path / "v", {"trainval": VOC_TRAINVAL, "test": VOC_TEST})
    for r in (root, root / "VOCdevkit", root / "VOCdevkit" / "VOC2007"):  # as resolve_voc_dir
        assert all(it.present() for it in sources.dataset_items("voc2007", r, ["trainval", "test"]))
    assert not any(it.present() for it in sources.dataset_items("voc2007", tmp_path / "empty",
                                                                ["trainval", "test"]))


def test_offline_gate_passes_the_synthetic_demo_whose_caches_are_made_in_the_job(monkeypatch, capsys):
    monkeypatch.setenv(dl.OFFLINE_ENV, "1")
    assert cli.main(["run", "--suite", "demo", "--dry-run"]) == 0
    assert "every file the runs read is on disk" in capsys.readouterr().out


def test_slurm_launcher_is_offline_by_default_and_names_what_jobs_would_download(
        world, tmp_path, monkeypatch, capsys):
    """Compute nodes often have no internet: `--launcher slurm` checks before submitting, as
    --offline does, and submits nothing while a file is missing."""
    from gmbench.launch import slurm
    monkeypatch.delenv(dl.OFFLINE_ENV)
    monkeypatch.setattr(slurm, "submit", lambda *a, **k: pytest.fail("submitted"))
    code = cli.main(["run", "--suite", "voc_table1", "--launcher", "slurm",
                     "--set", "data.root=/nowhere/voc"])
    assert code == 1
    err = capsys.readouterr().err
    assert "/nowhere/voc/VOCdevkit/VOC2007/ImageSets/Main/test.txt" in err
    assert "python -m gmbench fetch --suite voc_table1 --set data.root=/nowhere/voc" in err
    assert os.environ[dl.OFFLINE_ENV] == "1"


@pytest.mark.parametrize("given, in_job", [(None, "1"), ("0", "0")])
def test_slurm_job_runs_offline_unless_the_submitting_shell_allowed_downloads(
        tmp_path, monkeypatch, given, in_job):
    from gmbench.launch.slurm import SlurmRun
    if given is None:
        monkeypatch.delenv(dl.OFFLINE_ENV, raising=False)
    else:
        monkeypatch.setenv(dl.OFFLINE_ENV, given)
    seen = {}

    def run_suite(*a, **k):
        seen["offline"] = os.environ.get(dl.OFFLINE_ENV)
        return tmp_path

    run = dataclasses.make_dataclass("R", ["run_id", "cfg"])(
        "r0", dataclasses.make_dataclass("C", ["device"])("cpu"))
    task = SlurmRun(run_suite, None, [run], "r0", tmp_path, ["csv"], 60.0, 0, 0.0)
    monkeypatch.setenv(dl.OFFLINE_ENV, "something else")  # the node's own environment
    assert task() is None and seen["offline"] == in_job
