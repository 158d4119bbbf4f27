"""dataset.decoded_cache: items read back from local disk equal the decoded files bit for bit (values and
dtypes), the augmented items equal the uncached ones under the same seed, a cut-short file is decoded again,
and another task selection never reads the files of this one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from demt_exp.data.example_nyud import write_fake_nyud
from demt_exp.data.example_pascal import write_fake_pascal
from demt_exp.data.nyud import NYUDv2
from demt_exp.data.pascal_context import PascalContext


def assert_same_sample(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if key == "meta":
            assert got["meta"] == value
        else:
            assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key


@pytest.mark.parametrize("layout", ["demt", "atrc"])
def test_nyud_items_read_back_equal_the_decoded_files(tmp_path: Path, layout: str) -> None:
    root = write_fake_nyud(tmp_path / "NYUDv2", layout, n_train=3, n_val=1, size=(30, 40))
    plain = NYUDv2(root, "train", transform=None)
    cached = NYUDv2(root, "train", transform=None, decoded_cache=tmp_path / "cache")
    first = [cached[i] for i in range(3)]  # decoded and written
    files = sorted(cached.decoded.folder.glob("*.npz"))
    assert [f.stem for f in files] == plain.ids
    for path in (root / "images").iterdir():
        path.unlink()  # from now on only the cache can give the images
    for index in range(3):
        assert_same_sample(cached[index], first[index])
    assert first[0]["image"].dtype == np.float32  # stored as bytes, given back as decoded


def test_pascal_items_and_augmented_batches_equal_the_uncached_ones(tmp_path: Path) -> None:
    root = write_fake_pascal(tmp_path / "PASCALContext", n_train=2, n_val=1, size=(40, 48))
    options = {"image_size": (32, 32), "cache_dir": tmp_path / "parts"}
    plain = PascalContext(root, "train", **options)
    cached = PascalContext(root, "train", decoded_cache=tmp_path / "cache", **options)
    for index in range(2):
        assert_same_sample(cached.decoded.get(plain.ids[index], lambda: plain.load(index)), plain.load(index))
        torch.manual_seed(index)
        expected = plain[index]
        torch.manual_seed(index)
        got = cached[index]  # read from the cache, augmented alike
        for key in expected:
            if key != "meta":
                assert torch.equal(got[key], expected[key]), key


def test_a_cut_short_or_foreign_file_is_decoded_again_and_other_tasks_use_another_folder(tmp_path: Path) -> None:
    root = write_fake_nyud(tmp_path / "NYUDv2", n_train=2, n_val=1, size=(30, 40))
    cached = NYUDv2(root, "train", transform=None, decoded_cache=tmp_path / "cache")
    expected = cached[0]
    path = cached.decoded.path(cached.ids[0])
    path.write_bytes(path.read_bytes()[:100])  # a worker killed while writing leaves no such file; a crash might
    assert_same_sample(cached[0], expected)
    assert np.load(path, allow_pickle=False)["image"].dtype == np.uint8  # written again, whole
    np.savez(path, image=np.zeros(3), depth=np.zeros(3))  # a file not written here: no size, no dtypes
    assert_same_sample(cached[0], expected)
    depth_only = NYUDv2(root, "train", tasks=["depth"], transform=None, decoded_cache=tmp_path / "cache")
    assert depth_only.decoded.folder != cached.decoded.folder
    assert list(depth_only[0]) == ["image", "depth", "meta"]
    stored = np.load(depth_only.decoded.path(cached.ids[0]), allow_pickle=False).files
    assert {"image", "semseg", "depth"} <= set(stored) and "normals" not in stored  # semseg: the crop reads it
