"""SPEC 3.4 transforms: each step's effect on labels against hand-computed expectations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from demt_exp.data.photometric import PhotoMetricDistortion, PhotoParams, hsv_to_rgb, rgb_to_hsv
from demt_exp.data.tasks import IGNORE_INDEX
from demt_exp.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AddIgnoreRegions,
    CropBox,
    Normalize,
    PadImage,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScaling,
    ToTensor,
    build_eval_transform,
    build_train_transform,
)

ALL_TASKS = ("semseg", "human_parts", "sal", "normals", "edge", "depth")


def make_sample(h: int = 7, w: int = 10, seed: int = 0) -> dict:
    """Every map distinct per pixel where possible, so resampling is traceable."""
    rng = np.random.default_rng(seed)
    normals = rng.normal(size=(h, w, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return {
        "image": rng.uniform(0, 255, (h, w, 3)).astype(np.float32),
        "semseg": rng.integers(0, 40, (h, w)).astype(np.int64),
        "human_parts": rng.integers(0, 7, (h, w)).astype(np.int64),
        "sal": rng.integers(0, 2, (h, w)).astype(np.int64),
        "depth": (1.0 + np.arange(h * w, dtype=np.float32).reshape(h, w, 1) / 10),
        "normals": normals,
        "edge": rng.integers(0, 2, (h, w, 1)).astype(np.float32),
        "meta": {"id": "x", "size": (h, w)},
    }


def nearest_index(src: int, dst: int) -> np.ndarray:
    """OpenCV INTER_NEAREST source index of each destination pixel: floor(d * src / dst)."""
    return np.floor(np.arange(dst) * src / dst).astype(int)


@pytest.mark.parametrize("scale", [1.5, 0.6, 2.0])
def test_scaling_resizes_labels_nearest_and_divides_depth(scale: float) -> None:
    sample = make_sample()
    out = RandomScaling.apply(sample, scale)
    h, w = int(7 * scale), int(10 * scale)
    rows, cols = nearest_index(7, h), nearest_index(10, w)
    for key in ("semseg", "human_parts", "sal", "edge", "normals"):
        assert out[key].shape[:2] == (h, w)
        np.testing.assert_array_equal(out[key], sample[key][rows][:, cols])
    np.testing.assert_allclose(out["depth"], sample["depth"][rows][:, cols] / scale, rtol=1e-6)
    assert out["image"].shape == (h, w, 3) and out["image"].dtype == np.float32
    assert set(np.unique(out["semseg"])) <= set(np.unique(sample["semseg"]))


def test_scaling_factor_comes_from_the_generator_and_keeps_constant_images() -> None:
    sample = make_sample(20, 30)
    sample["image"][:] = 77.0
    s = np.random.default_rng(5).uniform(0.5, 2.0)
    out = RandomScaling()(sample, np.random.default_rng(5))
    assert out["image"].shape[:2] == (int(20 * s), int(30 * s))
    np.testing.assert_allclose(out["image"], 77.0, atol=1e-4)
    assert sample["depth"][0, 0, 0] == 1.0  # the input sample is left as it was


def test_flip_mirrors_every_map_and_negates_normals_x_only() -> None:
    sample = make_sample()
    out = RandomHorizontalFlip.apply(sample)
    for key in ("image", "semseg", "human_parts", "sal", "depth", "edge"):
        np.testing.assert_array_equal(out[key], sample[key][:, ::-1])
    mirrored = sample["normals"][:, ::-1]
    np.testing.assert_array_equal(out["normals"][..., 0], -mirrored[..., 0])
    np.testing.assert_array_equal(out["normals"][..., 1:], mirrored[..., 1:])
    flips = [RandomHorizontalFlip().draw(np.random.default_rng(i)) for i in range(400)]
    assert 0.4 < np.mean(flips) < 0.6


def test_pad_is_centred_with_task_fill_values() -> None:
    sample = make_sample(5, 6)
    sample["depth"][0, 0, 0] = 0.0  # a missing depth pixel inside the image
    out = AddIgnoreRegions()(PadImage((8, 9))(Normalize()(sample)))
    top, left = 1, 1  # floor(3 / 2) on both axes; 2 rows / columns after
    assert out["meta"]["pad"] == (top, left)
    inside = (slice(top, top + 5), slice(left, left + 6))
    border = np.ones((8, 9), bool)
    border[inside] = False
    np.testing.assert_array_equal(out["semseg"][inside], sample["semseg"])
    for key in ("semseg", "human_parts", "sal"):
        assert (out[key][border] == IGNORE_INDEX).all()
    assert (out["edge"][border] == IGNORE_INDEX).all()
    assert (out["depth"][border] == IGNORE_INDEX).all() and out["depth"][top, left, 0] == IGNORE_INDEX
    assert (out["normals"][border] == IGNORE_INDEX).all()
    # image fill 0 after normalisation = the ImageNet mean colour
    rgb = (out["image"][border] * IMAGENET_STD + IMAGENET_MEAN) * 255
    np.testing.assert_allclose(rgb, np.broadcast_to(IMAGENET_MEAN * 255, rgb.shape), atol=1e-3)
    np.testing.assert_allclose(out["image"][inside], (sample["image"] / 255 - IMAGENET_MEAN) / IMAGENET_STD, atol=1e-5)


def test_pad_never_crops_and_records_zero_offsets() -> None:
    out = PadImage((4, 4))(make_sample(5, 6))
    assert out["image"].shape == (5, 6, 3) and out["meta"]["pad"] == (0, 0)


def crop_of(semseg: np.ndarray, box: CropBox) -> np.ndarray:
    return semseg[box.top : box.top + box.height, box.left : box.left + box.width]


def test_crop_rejects_dominated_crops_until_one_passes() -> None:
    """Class 1 fills a 6x6 square in a 40x40 map of class 0: few 10x10 crops have < 75% class 0."""
    sample = make_sample(40, 40)
    semseg = np.zeros((40, 40), np.int64)
    semseg[17:23, 17:23] = 1
    semseg[:, :3] = IGNORE_INDEX  # ignore pixels are not counted
    sample["semseg"] = semseg
    crop = RandomCrop((10, 10))
    base_rate = np.mean(
        [crop.acceptable(crop_of(semseg, crop._box(40, 40, np.random.default_rng(i)))) for i in range(500)]
    )
    assert base_rate < 0.1
    accepted = 0
    for seed in range(60):
        box = crop.draw(sample, np.random.default_rng(seed))
        replay = np.random.default_rng(seed)  # the same draws: first acceptable of 11, else the 11th
        candidates = [crop._box(40, 40, replay) for _ in range(11)]
        expected = next((b for b in candidates if crop.acceptable(crop_of(semseg, b))), candidates[-1])
        assert box == expected
        if crop.acceptable(crop_of(semseg, box)):
            accepted += 1
            labels, counts = np.unique(crop_of(semseg, box), return_counts=True)
            counts = counts[labels != IGNORE_INDEX]
            assert len(counts) > 1 and counts.max() / counts.sum() < 0.75
    assert accepted / 60 > 2 * base_rate
    out = crop(sample, np.random.default_rng(0))
    assert out["image"].shape == (10, 10, 3) and out["normals"].shape == (10, 10, 3)


def test_crop_keeps_the_whole_image_when_smaller_than_the_crop() -> None:
    sample = make_sample(5, 6)
    out = RandomCrop((8, 9))(sample, np.random.default_rng(0))
    for key in ("image", "semseg", "depth", "normals"):
        np.testing.assert_array_equal(out[key], sample[key])
    wide = make_sample(5, 20)
    out = RandomCrop((8, 9))(wide, np.random.default_rng(1))
    assert out["semseg"].shape == (5, 9)  # short axis whole, long axis cropped


def test_crop_needs_semseg_even_when_it_is_no_task() -> None:
    sample = make_sample()
    del sample["semseg"]
    with pytest.raises(KeyError, match="semseg"):
        RandomCrop((4, 4))(sample, np.random.default_rng(0))


def test_opencv_hsv_convention() -> None:
    rgb = np.array([[[10, 20, 30], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [90, 90, 90]]], np.uint8)
    expected = [[105, 170, 30], [0, 255, 255], [60, 255, 255], [120, 255, 255], [30, 255, 255], [0, 0, 90]]
    np.testing.assert_array_equal(rgb_to_hsv(rgb)[0], expected)
    colours = np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    assert np.abs(hsv_to_rgb(rgb_to_hsv(colours)).astype(int) - colours).max() <= 5  # 2-degree hue steps
    np.testing.assert_array_equal(hsv_to_rgb(rgb_to_hsv(rgb[:, [1, 5]])), rgb[:, [1, 5]])


def test_photometric_distortion_touches_only_the_image_and_stays_in_range() -> None:
    sample = make_sample(16, 16)
    sample["image"][0, 0] = [0.0, 255.0, 254.9]
    distort = PhotoMetricDistortion()
    for seed in range(20):
        out = distort(sample, np.random.default_rng(seed))
        for key in ("semseg", "depth", "normals", "edge", "human_parts", "sal"):
            assert out[key] is sample[key]
        assert out["image"].dtype == np.float32
        assert out["image"].min() >= 0 and out["image"].max() <= 255
        np.testing.assert_array_equal(out["image"], np.round(out["image"]))  # uint8 values
    # no step drawn: only the uint8 truncation
    np.testing.assert_array_equal(distort.distort(sample["image"], PhotoParams()), np.floor(sample["image"]))
    bright = distort.distort(sample["image"], PhotoParams(brightness=20.0))
    np.testing.assert_array_equal(bright, np.clip(np.floor(sample["image"]) + 20, 0, 255))
    hue = [distort.draw(np.random.default_rng(i)).hue for i in range(2000)]
    shifts = [h for h in hue if h is not None]
    assert min(shifts) == -18 and max(shifts) == 17


def test_human_parts_without_parts_become_all_ignore() -> None:
    empty = {"human_parts": np.array([[0, 0], [255, 0]])}
    assert (AddIgnoreRegions()(empty)["human_parts"] == IGNORE_INDEX).all()
    person = {"human_parts": np.array([[0, 3], [255, 0]])}
    np.testing.assert_array_equal(AddIgnoreRegions()(person)["human_parts"], person["human_parts"])


def test_zero_normals_and_zero_depth_become_ignore() -> None:
    normals = np.ones((2, 2, 3), np.float32)
    normals[0, 1] = 0
    depth = np.array([[1.0, 0.0], [2.0, 3.0]], np.float32)[..., None]
    out = AddIgnoreRegions()({"normals": normals, "depth": depth})
    assert (out["normals"][0, 1] == IGNORE_INDEX).all() and (out["normals"][0, 0] == 1).all()
    np.testing.assert_array_equal(out["depth"][..., 0], [[1, IGNORE_INDEX], [2, 3]])
    assert normals[0, 1, 0] == 0  # input untouched


def check_layout(out: dict, size: tuple[int, int], tasks: tuple[str, ...]) -> None:
    """The batch layout of demt_exp.data.tasks."""
    assert set(out) == {"image", "meta", *tasks}
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, *size)
    for key in tasks:
        if key in ("semseg", "human_parts", "sal"):
            assert out[key].dtype == torch.int64 and out[key].shape == size
        else:
            channels = 3 if key == "normals" else 1
            assert out[key].dtype == torch.float32 and out[key].shape == (channels, *size)
    assert out["meta"]["size"].dtype == torch.int64 and out["meta"]["pad"].shape == (2,)


@pytest.mark.parametrize("seed", range(6))
def test_train_pipeline_output_layout_and_determinism(seed: int) -> None:
    transform = build_train_transform((12, 16), ALL_TASKS)
    sample = make_sample(10, 14, seed)
    out = transform(sample, np.random.default_rng(seed))
    check_layout(out, (12, 16), ALL_TASKS)
    again = transform(sample, np.random.default_rng(seed))
    for key in ALL_TASKS + ("image",):
        assert torch.equal(out[key], again[key])
    assert out["meta"]["size"].tolist() == [10, 14]


def test_train_pipeline_drops_semseg_when_not_a_task() -> None:
    out = build_train_transform((6, 8), ("depth",))(make_sample(), np.random.default_rng(0))
    check_layout(out, (6, 8), ("depth",))


def test_eval_pipeline_pads_only() -> None:
    sample = make_sample(7, 10)
    out = build_eval_transform((9, 13), ALL_TASKS)(sample)
    check_layout(out, (9, 13), ALL_TASKS)
    assert out["meta"]["pad"].tolist() == [1, 1]
    assert torch.equal(out["semseg"][1:8, 1:11], torch.from_numpy(sample["semseg"]))
    np.testing.assert_allclose(out["depth"][0, 1:8, 1:11].numpy(), sample["depth"][..., 0])


def test_to_tensor_layout() -> None:
    out = ToTensor()(
        {"edge": np.zeros((2, 3), np.float32), "sal": np.ones((2, 3, 1), np.uint8), "meta": {"id": "a", "size": (2, 3)}}
    )
    assert out["edge"].shape == (1, 2, 3) and out["sal"].shape == (2, 3) and out["sal"].dtype == torch.int64
    assert out["meta"]["id"] == "a" and out["meta"]["size"].tolist() == [2, 3]
