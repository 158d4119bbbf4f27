"""SyntheticScenes: procedurally rendered rooms with consistent labels for all six tasks.

The suite's default data set (CPU demos, tests). Each sample is ray-cast from a pinhole camera
into a box-shaped room (floor, back wall, side walls) holding spheres, boxes and sometimes a
person built from body-part primitives. One z-buffer decides the visible surface, and every
label (semseg, depth, normals, edge, sal, human_parts) and the image are read off it, so the
labels agree with each other exactly. Samples depend only on (seed, split, index).

Camera (OpenCV convention, x right, y down, z forward): focal f = 0.9 * max(H, W) pixels,
principal point (W/2, H/2), pixel (v, u) looks along ((u + 0.5 - W/2) / f, (v + 0.5 - H/2) / f, 1),
so a hit at ray parameter t has z-depth t. The camera sits `height` metres above the floor and is
pitched down by `pitch` radians. Depth is z-depth in metres; normals are unit vectors in camera
coordinates facing the camera.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from demt_exp.data.tasks import IGNORE_INDEX, TASK_NAMES

SPLITS = {"train": 0, "val": 1, "test": 2}
FOCAL_SCALE = 0.9  # focal length in pixels per pixel of max(H, W): about 58 degrees across 128 px
FLOOR, WALL = 0, 1
SHAPES = ("sphere", "cube", "tall_box", "panel")  # object class c has shape SHAPES[(c - 2) % 4]
MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
# Part colours 1 head .. 6 lower legs (index 0 unused): skin, shirt, sleeves, skin, jeans, shoes.
PART_RGB = np.array(
    [[0, 0, 0], [230, 185, 155], [70, 70, 80], [110, 110, 120], [205, 150, 120], [40, 50, 95], [25, 25, 30]], np.float64
)


@dataclass
class Prim:
    """One ray-castable primitive: a sphere (half=None) or an oriented box (centre, rotation, half sizes)."""

    cls: int
    inst: int
    centre: np.ndarray
    radius: float = 0.0
    rot: np.ndarray = field(default_factory=lambda: np.eye(3))  # world-from-local
    half: np.ndarray | None = None
    part: int = 0
    rgb: np.ndarray = field(default_factory=lambda: np.zeros(3))


@dataclass
class Scene:
    """Everything random about one sample; rendering it is deterministic."""

    height: float  # camera height above the floor (m)
    pitch: float  # downward camera pitch (rad)
    wall_distance: float  # back wall at world Z = wall_distance (horizontal forward axis, m)
    half_width: float  # side walls at world X = +-half_width (m)
    light: np.ndarray  # unit vector towards the light, camera coordinates
    prims: list[Prim]
    room_rgb: np.ndarray  # (2, 3) floor and wall colours


def _rot(axis: int, a: float) -> np.ndarray:
    """Rotation by angle a about axis 1 (vertical: yaw) or 2 (forward: arm abduction)."""
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def class_rgb(cls: int) -> np.ndarray:
    """Base colour of a class: fixed room colours, well-spread hues for objects (person uses PART_RGB)."""
    if cls == FLOOR:
        return np.array([150.0, 115.0, 85.0])
    if cls == WALL:
        return np.array([200.0, 196.0, 186.0])
    return 255.0 * np.array(colorsys.hsv_to_rgb(((cls - 2) * 0.618) % 1.0, 0.75, 0.9))


def _person(rng: np.random.Generator, inst: int, cls: int, base: np.ndarray, yaw: float) -> list[Prim]:
    """A standing figure (about 1.75 m) of boxes and a head sphere, arms raised at random angles."""
    s, rot = rng.uniform(0.9, 1.1), _rot(1, yaw)
    tint = rng.uniform(0.9, 1.1, 3)
    local: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None, float]] = []
    for side in (-1, 1):
        local.append((6, np.array([0.1 * side, 0.22, 0]), np.eye(3), np.array([0.06, 0.22, 0.07]), 0))
        local.append((5, np.array([0.1 * side, 0.66, 0]), np.eye(3), np.array([0.075, 0.22, 0.08]), 0))
        r_up = _rot(2, side * rng.uniform(0.1, 1.2))
        r_lo = r_up @ _rot(2, side * rng.uniform(0.0, 0.9))
        shoulder = np.array([0.25 * side, 1.40, 0])
        elbow = shoulder + r_up @ np.array([0, -0.30, 0])
        local.append((3, shoulder + r_up @ np.array([0, -0.15, 0]), r_up, np.array([0.05, 0.15, 0.05]), 0))
        local.append((4, elbow + r_lo @ np.array([0, -0.14, 0]), r_lo, np.array([0.045, 0.14, 0.045]), 0))
    local.append((2, np.array([0, 1.16, 0]), np.eye(3), np.array([0.19, 0.28, 0.11]), 0))
    local.append((1, np.array([0, 1.57, 0]), np.eye(3), None, 0.12))
    return [
        Prim(cls, inst, base + s * (rot @ c), s * r, rot @ R, None if h is None else s * h, part, PART_RGB[part] * tint)
        for part, c, R, h, r in local
    ]


def sample_scene(rng: np.random.Generator, num_classes: int, hfov_tan: float, person_probability: float = 0.5) -> Scene:
    """Draw camera, room, light and 3-6 objects (plus a person with `person_probability`) inside the view."""
    height, pitch = rng.uniform(1.2, 1.8), np.deg2rad(rng.uniform(12, 24))
    wall_distance, half_width = rng.uniform(5.5, 9.0), rng.uniform(2.5, 5.0)
    light = np.array([rng.uniform(-0.5, 0.5), -1.0, -rng.uniform(0.3, 0.8)])
    room = np.stack([class_rgb(c) * rng.uniform(0.85, 1.15, 3) for c in (FLOOR, WALL)])
    prims: list[Prim] = []
    n_obj = int(rng.integers(3, 7))
    for k in range(n_obj + 1):
        if k == n_obj and rng.random() >= person_probability:
            break
        z = rng.uniform(2.2, min(wall_distance - 0.8, 4.5 if k == n_obj else 6.5))  # persons nearer
        lim = min(0.8 * z * hfov_tan, half_width - 0.8)
        floor_pt = np.array([rng.uniform(-lim, lim), -height, z])
        yaw = rng.uniform(-np.pi, np.pi)
        if k == n_obj:  # the person, roughly facing the camera
            prims += _person(rng, k + 4, num_classes - 1, floor_pt, rng.uniform(-0.6, 0.6))
            continue
        cls = int(rng.integers(2, num_classes - 1))
        shape, size = SHAPES[(cls - 2) % len(SHAPES)], rng.uniform(0.8, 1.2)
        rgb = class_rgb(cls) * rng.uniform(0.85, 1.15, 3)
        half = {"cube": [0.4, 0.4, 0.4], "tall_box": [0.25, 0.8, 0.25], "panel": [0.55, 0.6, 0.04]}.get(shape)
        if half is None:
            r = 0.45 * size
            prims.append(Prim(cls, k + 4, floor_pt + [0, r, 0], radius=r, rgb=rgb))
        else:
            h = np.array(half) * size
            prims.append(Prim(cls, k + 4, floor_pt + [0, h[1], 0], rot=_rot(1, yaw), half=h, rgb=rgb))
    return Scene(height, pitch, wall_distance, half_width, light / np.linalg.norm(light), prims, room)


def _hit_sphere(d: np.ndarray, p: Prim) -> tuple[np.ndarray, np.ndarray]:
    """Nearest positive ray parameter (inf on a miss) and world normal (x - c) / r; d is (3, h, w)."""
    b = np.tensordot(p.centre, d, 1)
    a = (d * d).sum(0)
    disc = b * b - a * (p.centre @ p.centre - p.radius**2)
    with np.errstate(invalid="ignore"):
        t = (b - np.sqrt(disc)) / a
    t = np.where((disc >= 0) & (t > 0), t, np.inf)
    return t, (np.where(np.isfinite(t), t, 0) * d - p.centre[:, None, None]) / p.radius


def _hit_box(d: np.ndarray, p: Prim) -> tuple[np.ndarray, np.ndarray]:
    """Slab test in the box frame; the normal is the entry face's outward normal. fmin/fmax skip 0/0."""
    dl = np.tensordot(p.rot.T, d, 1)
    ol = -(p.centre @ p.rot)[:, None, None]
    h = p.half[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-h - ol) / dl, (h - ol) / dl
    near, far = np.fmin(t1, t2), np.fmax(t1, t2)
    t_near = np.fmax(np.fmax(near[0], near[1]), near[2])
    t_far = np.fmin(np.fmin(far[0], far[1]), far[2])
    t = np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)
    n_local = -np.sign(dl) * (near == t_near)
    return t, np.tensordot(p.rot, n_local, 1)


def _window(p: Prim, cam_from_world: np.ndarray, f: float, H: int, W: int) -> tuple[slice, slice]:
    """Pixel rectangle that contains the primitive's projected bounding sphere (cheap culling)."""
    R = p.radius if p.half is None else float(np.linalg.norm(p.half))
    x, y, z = cam_from_world @ p.centre
    if z - R < 1e-3:
        return slice(0, H), slice(0, W)
    bounds = []
    for c, n in ((y, H), (x, W)):
        q = [(c + sr) / (z + sz) * f + n / 2 - 0.5 for sr in (-R, R) for sz in (-R, R)]
        bounds.append(slice(max(0, int(np.floor(min(q)))), max(0, min(n, int(np.ceil(max(q))) + 1))))
    return bounds[0], bounds[1]


def render(scene: Scene, size: tuple[int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Ray-cast the scene: z-buffered depth, normals, class, instance and part maps, and the RGB image."""
    H, W = size
    f = FOCAL_SCALE * max(H, W)
    v, u = np.meshgrid((np.arange(H) + 0.5 - H / 2) / f, (np.arange(W) + 0.5 - W / 2) / f, indexing="ij")
    ca, sa = np.cos(scene.pitch), np.sin(scene.pitch)
    cam_from_world = np.array([[1, 0, 0], [0, -ca, -sa], [0, -sa, ca]])  # columns: world X, up, forward
    d = np.tensordot(cam_from_world.T, np.stack([u, v, np.ones_like(u)]), 1)  # world rays (3, H, W)
    # the room (instances 0 floor, 1 back wall, 2/3 side walls) is the convex box around the camera,
    # so the nearest positive plane hit along each ray is the visible room surface
    axes = [1, 2, 0, 0]
    offsets = np.array([-scene.height, scene.wall_distance, -scene.half_width, scene.half_width])
    with np.errstate(divide="ignore"):
        t = offsets[:, None, None] / d[axes]
    inst = np.where(t > 0, t, np.inf).argmin(0)
    zbuf = np.take_along_axis(t, inst[None], 0)[0]
    normal = (np.eye(3)[:, axes] * -np.sign(offsets))[:, inst]
    cls, part = np.where(inst == 0, FLOOR, WALL), np.zeros((H, W), np.int64)
    rgb = scene.room_rgb.T[:, cls]
    for p in scene.prims:
        win = _window(p, cam_from_world, f, H, W)
        if win[0].start >= win[0].stop or win[1].start >= win[1].stop:
            continue
        t, n = (_hit_box if p.half is not None else _hit_sphere)(d[:, win[0], win[1]], p)
        zw, nw, rw = zbuf[win], normal[:, win[0], win[1]], rgb[:, win[0], win[1]]
        m = t < zw
        zw[m], cls[win][m], inst[win][m], part[win][m] = t[m], p.cls, p.inst, p.part
        nw[:, m], rw[:, m] = n[:, m], p.rgb[:, None]
    n_cam = np.tensordot(cam_from_world, normal, 1)
    n_cam /= np.sqrt((n_cam * n_cam).sum(0))
    pts = zbuf * d
    checker = (np.floor(pts[0] / 0.5) + np.floor(pts[2] / 0.5)) % 2
    rgb *= np.where(cls == FLOOR, 0.92 + 0.16 * checker, 1.0)
    rgb *= 0.35 + 0.65 * np.clip(np.tensordot(scene.light, n_cam, 1), 0, None)
    fog = 1 - np.exp(-zbuf / 40.0)
    rgb = rgb * (1 - fog) + 190.0 * fog + 3.0 * rng.standard_normal(rgb.shape, np.float32)
    return {"depth": zbuf, "normals": n_cam, "semseg": cls, "inst": inst, "part": part, "rgb": rgb}


def boundary(ids: np.ndarray) -> np.ndarray:
    """1 on every pixel with a 4-neighbour of different id (both sides of a boundary)."""
    e = np.zeros(ids.shape, bool)
    dx, dy = ids[:, 1:] != ids[:, :-1], ids[1:] != ids[:-1]
    e[:, 1:] |= dx
    e[:, :-1] |= dx
    e[1:] |= dy
    e[:-1] |= dy
    return e


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class SyntheticScenes(Dataset):
    """Rendered rooms; semseg classes: 0 floor, 1 wall, 2..K-2 objects (shape SHAPES[(c-2)%4]), K-1 person."""

    def __init__(
        self,
        split: str = "train",
        tasks: Sequence[str] = TASK_NAMES,
        num_samples: int = 64,
        image_size: Sequence[int] = (96, 128),
        num_semseg_classes: int = 8,
        seed: int = 0,
        person_probability: float = 0.5,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        if isinstance(tasks, str):
            raise ValueError(f"tasks must be a sequence of task names, not the string {tasks!r}")
        unknown = [t for t in tasks if t not in TASK_NAMES]
        if unknown:
            raise ValueError(f"tasks: unknown task(s) {unknown}; expected names from {list(TASK_NAMES)}")
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be a non-empty list of distinct task names, got {list(tasks)}")
        if not isinstance(image_size, Sequence) or isinstance(image_size, str) or len(image_size) != 2:
            raise ValueError(f"image_size must be (H, W) with two positive integers, got {image_size!r}")
        k = num_semseg_classes
        if isinstance(k, bool) or not isinstance(k, int) or k < 4:
            raise ValueError(
                f"num_semseg_classes must be an integer >= 4 (floor, wall, object, person), got {num_semseg_classes!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if not 0.0 <= float(person_probability) <= 1.0:
            raise ValueError(f"person_probability must lie in [0, 1], got {person_probability!r}")
        self.split, self.tasks, self.seed = split, tuple(tasks), seed
        self.person_probability = float(person_probability)
        self.num_samples = _positive_int("num_samples", num_samples)
        self.image_size = tuple(_positive_int("image_size", s) for s in image_size)
        self.num_semseg_classes = num_semseg_classes
        self.focal = FOCAL_SCALE * max(self.image_size)  # pixels; principal point at (W/2, H/2)

    def __len__(self) -> int:
        return self.num_samples

    def _rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        return np.random.default_rng([self.seed, SPLITS[self.split], index])

    def scene(self, index: int) -> Scene:
        """The scene parameters of sample `index` (for tests and visualisation)."""
        H, W = self.image_size
        return sample_scene(self._rng(index), self.num_semseg_classes, W / 2 / self.focal, self.person_probability)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        rng = self._rng(index)
        H, W = self.image_size
        scene = sample_scene(rng, self.num_semseg_classes, W / 2 / self.focal, self.person_probability)
        maps = render(scene, (H, W), rng)
        image = (np.clip(maps["rgb"], 0, 255).astype(np.float32) / 255 - MEAN) / STD
        parts = (
            maps["part"]
            if (maps["semseg"] == self.num_semseg_classes - 1).any()
            else np.full((H, W), IGNORE_INDEX, np.int64)
        )
        targets = {
            "semseg": maps["semseg"],
            "sal": (maps["semseg"] >= 2).astype(np.int64),
            "human_parts": parts,
            "depth": maps["depth"][None].astype(np.float32),
            "normals": maps["normals"].astype(np.float32),
            "edge": boundary(maps["inst"])[None].astype(np.float32),
        }
        sample = {"image": torch.from_numpy(np.ascontiguousarray(image))}
        sample.update({t: torch.from_numpy(np.ascontiguousarray(targets[t])) for t in self.tasks})
        sample["meta"] = {"id": f"synthetic_{self.split}_{index:06d}", "size": torch.tensor([H, W])}
        return sample
