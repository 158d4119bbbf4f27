"""PASCAL-Context loader (SPEC 3.3): part map, edges, normals mask, saliency, part index cache,
semseg fallback, named errors and the config (the short real training run:
integration/test_pascal_context_training.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import REPO_ROOT
from PIL import Image
from torch.utils.data import DataLoader

from demt_exp.data import pascal_parts
from demt_exp.data.edges import edges_from_labels, laplacian, thin
from demt_exp.data.example_pascal import (
    CONTEXT_CLASSES,
    NORMALS_VALID,
    FakeObject,
    cat_objects,
    person_objects,
    write_class_tables,
    write_context_labels,
    write_fake_pascal,
    write_part_annotation,
)
from demt_exp.data.nyud import DatasetFileError
from demt_exp.data.pascal_context import (
    PASCAL_TASKS,
    PascalContext,
    class_table_dirs,
    normals_valid_classes,
    semseg_path,
)
from demt_exp.data.pascal_parts import (
    HUMAN_PART_GROUPS,
    cached_index_path,
    human_part_map,
    read_part_objects,
    root_index_path,
)
from demt_exp.data.tasks import IGNORE_INDEX

REPO = REPO_ROOT
TRAIN_IDS = ["2008_000001", "2008_000002", "2008_000003"]  # person, no person, person


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every default part-index cache inside the test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_pascal(tmp_path_factory.mktemp("pascal") / "PASCALContext")


def small_root(tmp_path: Path, **kwargs) -> Path:
    return write_fake_pascal(tmp_path / "PASCALContext", n_train=3, n_val=1, size=(8, 8), **kwargs)


# ---- human parts -------------------------------------------------------------------------------


def test_part_groups_are_the_six_groups_of_the_spec() -> None:
    groups: dict[int, set[str]] = {}
    for name, group in HUMAN_PART_GROUPS.items():
        groups.setdefault(group, set()).add(name)
    assert groups == {
        1: {"hair", "head", "lear", "rear", "lebrow", "rebrow", "leye", "reye", "mouth", "nose"},
        2: {"torso", "neck"},
        3: {"luarm", "ruarm"},
        4: {"llarm", "rlarm", "lhand", "rhand"},
        5: {"luleg", "ruleg"},
        6: {"llleg", "rlleg", "lfoot", "rfoot"},
    }


def test_part_map_of_a_hand_built_person(tmp_path: Path) -> None:
    path = tmp_path / "parts.mat"
    write_part_annotation(path, person_objects(8, 8))
    objects = read_part_objects(path)
    assert [(o.class_id, [n for n, _ in o.parts]) for o in objects] == [(15, ["head", "torso", "luarm"]), (8, ["head"])]
    expected = np.zeros((8, 8), np.int64)
    expected[2:4, :2] = 1  # head
    expected[4:, :2] = 2  # torso
    expected[4:, 2:4] = 3  # upper arm, written after the torso it overlaps
    np.testing.assert_array_equal(human_part_map(objects, (8, 8)), expected)  # the cat's part is ignored
    person = objects[0]
    reordered = FakeObject("person", 15, person.mask, [person.parts[0], person.parts[2], person.parts[1]])
    write_part_annotation(path, [reordered])
    overwritten = expected.copy()
    overwritten[4:, :4] = 2  # now the torso comes last and wins
    np.testing.assert_array_equal(human_part_map(read_part_objects(path), (8, 8)), overwritten)


def test_later_persons_overwrite_and_persons_without_parts_add_nothing(tmp_path: Path) -> None:
    mask = np.ones((4, 4), bool)
    objects = [
        FakeObject("person", 15, mask, [("hair", mask)]),
        FakeObject("person", 15, mask, []),
        FakeObject("person", 15, mask, [("rfoot", np.eye(4, dtype=bool))]),
    ]
    path = tmp_path / "two.mat"
    write_part_annotation(path, objects)
    expected = np.ones((4, 4), np.int64)
    np.fill_diagonal(expected, 6)
    np.testing.assert_array_equal(human_part_map(read_part_objects(path), (4, 4), path), expected)
    write_part_annotation(path, cat_objects(4, 4))
    assert not human_part_map(read_part_objects(path), (4, 4)).any()
    write_part_annotation(path, [FakeObject("person", 15, mask, [("tail", mask)])])
    with pytest.raises(DatasetFileError, match=r"two\.mat.*'tail'.*expected a part name"):
        human_part_map(read_part_objects(path), (4, 4), path)


def test_images_without_persons_are_all_ignored_after_the_transform(root: Path) -> None:
    raw = PascalContext(root, "train", tasks=["semseg", "human_parts"], transform=None)
    assert raw.has_person == {TRAIN_IDS[0]: True, TRAIN_IDS[1]: False, TRAIN_IDS[2]: True}
    assert not raw[1]["human_parts"].any() and set(np.unique(raw[0]["human_parts"])) == {0, 1, 2, 3}
    val = PascalContext(root, "val", tasks=["semseg", "human_parts"], image_size=(48, 48))  # no person, person
    assert (val[0]["human_parts"] == IGNORE_INDEX).all()
    assert set(torch.unique(val[1]["human_parts"]).tolist()) == {0, 1, 2, 3, IGNORE_INDEX}  # 255 = padding


def test_human_parts_as_only_task_keeps_images_with_persons(root: Path) -> None:
    only = PascalContext(root, "train", tasks=["human_parts"])
    assert only.ids == [TRAIN_IDS[0], TRAIN_IDS[2]]


# ---- part index ----------------------------------------------------------------------------------


def test_part_index_goes_to_the_cache_not_the_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = small_root(tmp_path), tmp_path / "cache"
    PascalContext(root, "train", tasks=["semseg", "human_parts"], cache_dir=cache)
    assert not (root / "ImageSets" / "Parts").exists()
    cached = cached_index_path(cache, root, "train")
    assert cached.is_file() and cached.parent.parent == cache
    assert json.loads(cached.read_text()) == {TRAIN_IDS[0]: [15, 8], TRAIN_IDS[1]: [8], TRAIN_IDS[2]: [15, 8]}

    def no_rebuild(paths: dict) -> dict:
        raise AssertionError("the cached part index should have been reused")

    monkeypatch.setattr(pascal_parts, "build_part_index", no_rebuild)
    assert PascalContext(root, "train", tasks=["human_parts"], cache_dir=cache).ids == [TRAIN_IDS[0], TRAIN_IDS[2]]
    with pytest.raises(AssertionError, match="reused"):  # another split is not in the cache yet
        PascalContext(root, "val", tasks=["human_parts"], cache_dir=cache)


def test_part_index_default_cache_stale_index_and_writing_to_root(tmp_path: Path, private_cache: Path) -> None:
    root = small_root(tmp_path)
    PascalContext(root, "train", tasks=["semseg", "human_parts"])
    cached = cached_index_path(private_cache / "demt_exp" / "pascal_parts", root, "train")
    assert cached.is_file() and not root_index_path(root, "train").exists()
    cached.write_text('{"2008_000001": [15]}')  # does not list the split's ids: rebuilt
    PascalContext(root, "train", tasks=["semseg", "human_parts"])
    assert set(json.loads(cached.read_text())) == set(TRAIN_IDS)
    PascalContext(root, "train", tasks=["semseg", "human_parts"], write_part_index_to_root=True)
    written = root_index_path(root, "train")
    assert written.read_text().startswith('{\n\t"2008_000001": [15, 8],\n')
    assert json.loads(written.read_text()) == json.loads(cached.read_text())


def test_a_valid_index_in_the_data_folder_is_used_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = small_root(tmp_path), tmp_path / "cache"
    index = {TRAIN_IDS[0]: [8], TRAIN_IDS[1]: [15], TRAIN_IDS[2]: [-1]}
    root_index_path(root, "train").parent.mkdir(parents=True)
    root_index_path(root, "train").write_text(json.dumps(index))
    monkeypatch.setattr(pascal_parts, "build_part_index", lambda paths: pytest.fail("index rebuilt"))
    data = PascalContext(root, "train", tasks=["semseg", "human_parts"], cache_dir=cache)
    assert data.has_person == {TRAIN_IDS[0]: False, TRAIN_IDS[1]: True, TRAIN_IDS[2]: False}
    assert not cache.exists()


# ---- edges -------------------------------------------------------------------------------------------


def test_laplacian_is_opencvs_ksize1_kernel_with_reflect101_border() -> None:
    labels = np.zeros((3, 4), np.uint16)
    labels[0, 0] = 5
    expected = np.zeros((3, 4))
    expected[0, 0] = -20.0  # mirrored neighbours are the interior zeros (a plain reflect would give -10)
    expected[0, 1] = expected[1, 0] = 5.0
    result = laplacian(labels)
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, expected)


def test_edges_of_a_tiny_label_map_by_hand() -> None:
    labels = np.array([[1, 1, 1, 2, 2, 2]] * 4)
    # Laplacian: +1 in column 2 and -1 in column 3, so the marked band is columns 2-3.
    np.testing.assert_array_equal(laplacian(labels)[:, 2:4], [[1, -1]] * 4)
    assert not laplacian(labels)[:, [0, 1, 4, 5]].any()
    # Guo-Hall pass 1 deletes every pixel of column 3 and (0, 2) (south-east side, G3 true);
    # pass 2 keeps (1, 2) and (3, 2) as end points (G2) and (2, 2) as a bridge (G1); nothing changes after.
    expected = np.zeros((4, 6), np.float32)
    expected[1:, 2] = 1
    edge = edges_from_labels(labels)
    assert edge.dtype == np.float32
    np.testing.assert_array_equal(edge, expected)


def test_thinning_matches_the_skimage_docstring_example() -> None:
    square = np.zeros((7, 7), bool)
    square[1:-1, 2:-2] = True
    square[0, 1] = True
    expected = np.zeros((7, 7), bool)
    expected[0, 1] = expected[1, 2] = True
    expected[2:5, 3] = True
    np.testing.assert_array_equal(thin(square), expected)
    assert not thin(np.zeros((3, 3))).any() and thin(np.eye(4)).sum() == 4  # a 1-px diagonal stays


def test_loaded_edges_come_from_the_context_labels(root: Path) -> None:
    sample = PascalContext(root, "val", tasks=["edge"], transform=None)[0]
    labels = np.full((40, 48), CONTEXT_CLASSES["wall"])
    labels[:20, 24:], labels[20:, :24], labels[20:, 24:] = 3, 4, 6
    assert sample["edge"].shape == (40, 48, 1)
    np.testing.assert_array_equal(sample["edge"][..., 0], edges_from_labels(labels))
    assert sample["edge"][..., 0].sum() > 0 and set(np.unique(sample["edge"])) == {0.0, 1.0}


# ---- normals, saliency, semseg -----------------------------------------------------------------------


def test_normals_only_on_nyu_compatible_classes(root: Path) -> None:
    # wall, floor, tvmonitor, person
    assert normals_valid_classes(class_table_dirs(root)).tolist() == list(NORMALS_VALID)
    raw = PascalContext(root, "val", tasks=["normals"], transform=None)[0]["normals"]
    png = np.asarray(Image.open(root / "normals_distill" / "2008_000004.png"), np.float32) * np.float32(2 / 255) - 1
    np.testing.assert_array_equal(raw[:20, :24], png[:20, :24])  # wall
    np.testing.assert_array_equal(raw[20:, :24], png[20:, :24])  # tvmonitor
    assert not raw[:20, 24:].any() and not raw[20:, 24:].any()  # sky, grass
    sample = PascalContext(root, "val", tasks=["normals"], image_size=(48, 48))[0]["normals"]
    inside = sample[:, 4:44]  # 40 rows padded by 4 on top
    assert (inside[:, 20:, 24:] == IGNORE_INDEX).all() and (inside[:, :20, 24:] == IGNORE_INDEX).all()
    assert (inside[:, :20, :24] != IGNORE_INDEX).all() and (inside[:, 20:, :24] != IGNORE_INDEX).all()


def test_saliency_threshold(tmp_path: Path) -> None:
    root = small_root(tmp_path)
    values = np.array([[0, 127, 128, 255]] * 8, np.uint8).repeat(2, axis=1)
    Image.fromarray(values).save(root / "sal_distill" / f"{TRAIN_IDS[0]}.png")
    sal = PascalContext(root, "train", tasks=["sal"], transform=None)[0]["sal"]
    assert sal.dtype == np.int64
    np.testing.assert_array_equal(sal[0], [0, 0, 0, 0, 1, 1, 1, 1])


def test_semseg_prefers_voc12_and_falls_back_to_pascal_context(tmp_path: Path) -> None:
    root = small_root(tmp_path)
    assert semseg_path(root, TRAIN_IDS[0]) == root / "semseg" / "VOC12" / f"{TRAIN_IDS[0]}.png"
    assert semseg_path(root, TRAIN_IDS[1]) == root / "semseg" / "pascal-context" / f"{TRAIN_IDS[1]}.png"
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(root / "semseg" / "pascal-context" / f"{TRAIN_IDS[0]}.png")
    data = PascalContext(root, "train", tasks=["semseg"], transform=None)
    voc = np.asarray(Image.open(root / "semseg" / "VOC12" / f"{TRAIN_IDS[0]}.png"))
    np.testing.assert_array_equal(data[0]["semseg"], voc)
    (root / "semseg" / "pascal-context" / f"{TRAIN_IDS[1]}.png").unlink()
    with pytest.raises(DatasetFileError, match=r"pascal-context/2008_000002\.png: missing, and so is .*VOC12"):
        data[1]


# ---- batches, errors, config, CLI ----------------------------------------------------------------------


def test_batches_have_the_task_layout(root: Path) -> None:
    train = PascalContext(root, "train", image_size=(32, 32))
    batch = next(iter(DataLoader(train, batch_size=2)))
    assert set(batch) == {"image", "meta", *PASCAL_TASKS}
    assert batch["image"].shape == (2, 3, 32, 32) and batch["image"].dtype == torch.float32
    for task in ("semseg", "human_parts", "sal"):
        assert batch[task].shape == (2, 32, 32) and batch[task].dtype == torch.int64
    assert batch["normals"].shape == (2, 3, 32, 32) and batch["edge"].shape == (2, 1, 32, 32)
    assert batch["meta"]["id"] == TRAIN_IDS[:2] and batch["meta"]["size"].tolist() == [[40, 48]] * 2
    val = PascalContext(root, "val", image_size=(48, 48))[0]
    assert val["meta"]["pad"].tolist() == [4, 0] and (val["semseg"][:4] == IGNORE_INDEX).all()
    assert (val["edge"][:, :4] == IGNORE_INDEX).all() and len(PascalContext(root, "val")) == 2


def test_missing_and_corrupt_files_are_named(tmp_path: Path) -> None:
    root = small_root(tmp_path)
    (root / "normals_distill" / f"{TRAIN_IDS[1]}.png").unlink()
    data = PascalContext(root, "train", tasks=["normals"], transform=None)
    with pytest.raises(DatasetFileError, match=r"normals_distill/2008_000002\.png: missing; expected an RGB PNG"):
        data[1]
    (root / "pascal-context" / "trainval" / f"{TRAIN_IDS[0]}.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetFileError, match=r"trainval/2008_000001\.mat: unreadable \.mat.*LabelMap"):
        data[0]
    write_context_labels(root / "pascal-context" / "trainval" / f"{TRAIN_IDS[2]}.mat", np.zeros((5, 8)))
    with pytest.raises(DatasetFileError, match=r"2008_000003\.mat: size 5x8; expected the size of its image"):
        data[2]
    (root / "human_parts" / f"{TRAIN_IDS[2]}.mat").unlink()
    with pytest.raises(DatasetFileError, match=r"human_parts/2008_000003\.mat: missing; expected a PASCAL-Part"):
        PascalContext(root, "train", tasks=["human_parts"], cache_dir=tmp_path / "cache")
    (root / "ImageSets" / "Context" / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Context/val\.txt"):
        PascalContext(root, "val", tasks=["semseg"])
    with pytest.raises(FileNotFoundError, match="PASCAL-Context root not found"):
        PascalContext(tmp_path / "nowhere", "train")


def test_class_tables_in_json_or_db_info_else_a_named_error(tmp_path: Path) -> None:
    root = small_root(tmp_path, tables=None)
    with pytest.raises(
        FileNotFoundError,
        match=r"context_classes\.json not found: looked for .*json/context_classes"
        r"\.json and .*db_info/context_classes\.json",
    ):
        PascalContext(root, "train", tasks=["normals"])
    PascalContext(root, "train", tasks=["semseg", "edge"])  # only normals need the tables
    write_class_tables(root, "db_info")
    assert PascalContext(root, "train", tasks=["normals"]).valid_normals_classes.tolist() == list(NORMALS_VALID)
    write_class_tables(tmp_path, "elsewhere")
    data = PascalContext(root, "train", tasks=["normals"], class_tables_dir=tmp_path / "elsewhere")
    assert data.valid_normals_classes.tolist() == list(NORMALS_VALID)
    (root / "db_info" / "context_classes.json").write_text(json.dumps({"wall": 1}))
    with pytest.raises(DatasetFileError, match=r"context_classes\.json: no class named 'tvmonitor'"):
        PascalContext(root, "train", tasks=["normals"])


def test_config_selects_pascal_tasks(compose, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMT_DATA", "/data")
    cfg = compose(["dataset=pascal_context"])
    assert list(cfg.tasks.names) == list(PASCAL_TASKS) and cfg.dataset.num_semseg_classes == 21
    assert cfg.dataset.train.root == "/data/PASCALContext" and list(cfg.dataset.val.image_size) == [512, 512]
    assert cfg.dataset.train._target_ == "demt_exp.data.pascal_context.PascalContext"
    assert cfg.dataset.val.cache_dir is None and cfg.dataset.train.write_part_index_to_root is False
    assert cfg.tasks.loss.edge_pos_weight == 0.95
