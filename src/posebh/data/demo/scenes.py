"""Scenes of the demo world: who stands where, seen by which camera, rendered how.

A :class:`Scene` is one rendered image with its figures; :func:`annotate` reads any dataset's
keypoints off a figure (projected positions plus honest visibility from the id buffer). Scenes
know nothing about release formats; :mod:`posebh.data.demo.generate` turns them into records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from posebh.data.demo import bodies
from posebh.data.demo.bodies import Figure
from posebh.data.demo.geometry import Camera, look_at, rot_y
from posebh.data.demo.render import Rendered, facing, render, visibility

# ----------------------------------------------------------------------------------------------
# Looks
# ----------------------------------------------------------------------------------------------

_SKIN = ((255, 224, 196), (234, 192, 160), (198, 148, 110), (160, 110, 75), (110, 72, 50), (80, 55, 40))
_HAIR = ((30, 25, 20), (70, 45, 25), (140, 100, 50), (200, 170, 110), (120, 120, 120), (160, 60, 30))


def _colour(rng: np.random.Generator, lo: int = 20, hi: int = 235) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _pattern(rng: np.random.Generator, kinds=("stripes", "spots", "patches"), p_plain: float = 0.45) -> dict | None:
    if rng.random() < p_plain:
        return None
    kind = str(rng.choice(kinds))
    return {"kind": kind, "rgb": _colour(rng), "period": float(rng.uniform(4, 11)), "angle": float(rng.uniform(0, np.pi)),
            "duty": float(rng.uniform(0.3, 0.6)), "radius": float(rng.uniform(0.08, 0.2)), "seed": float(rng.uniform(0, 6))}  # fmt: skip


def person_palette(rng: np.random.Generator) -> dict:
    """Skin, hair and clothes of one person (long or short sleeves and trousers)."""
    skin = {"rgb": _SKIN[rng.integers(len(_SKIN))]}
    shirt = {"rgb": _colour(rng), "pattern": _pattern(rng)}
    pants = {"rgb": _colour(rng, 10, 160), "pattern": _pattern(rng, ("stripes", "patches"), 0.8)}
    return {
        "skin": skin,
        "hair": {"rgb": _HAIR[rng.integers(len(_HAIR))]},
        "shirt": shirt,
        "sleeve": shirt if rng.random() < 0.75 else skin,
        "forearm": shirt if rng.random() < 0.4 else skin,
        "pants": pants,
        "shin": pants if rng.random() < 0.8 else skin,
        "shoes": {"rgb": _colour(rng, 10, 120)},
        "features": tuple(int(c) for c in np.asarray(skin["rgb"]) * 0.35),
    }


def animal_palette(rng: np.random.Generator, sp: bodies.Species) -> dict:
    base = np.asarray(sp.colors[rng.integers(len(sp.colors))], np.float64) * rng.uniform(0.85, 1.1)
    base = tuple(int(c) for c in np.clip(base, 0, 255))
    dark = tuple(int(c * 0.35) for c in base)
    pattern = None
    if sp.pattern == "stripes":
        pattern = {"kind": "stripes", "rgb": (25, 20, 20), "period": float(rng.uniform(5, 9)), "angle": float(rng.uniform(1.2, 1.9)), "duty": 0.35}
    elif sp.pattern == "spots":
        pattern = {"kind": "spots", "rgb": (120, 70, 30), "period": float(rng.uniform(6, 10)), "radius": 0.12}
    elif sp.pattern == "patches":
        pattern = {"kind": "patches", "rgb": tuple(int(c) for c in sp.colors[-1]), "period": float(rng.uniform(6, 12)), "seed": float(rng.uniform(0, 6))}
    fur = {"rgb": base, "pattern": pattern}
    legs = fur if rng.random() < 0.7 else {"rgb": tuple(int(c * 0.7) for c in base)}
    return {"fur": fur, "legs": legs, "features": dark}


def hand_palette(rng: np.random.Generator) -> dict:
    return {"skin": {"rgb": _SKIN[rng.integers(len(_SKIN))]}}


#: AP-10K ``background`` codes and the colours that make each look like itself.
BACKGROUNDS = {
    1: ((150, 160, 70), (200, 190, 120)),  # grass / savanna
    2: ((40, 80, 40), (90, 120, 60)),  # forest / shrub
    3: ((110, 95, 80), (150, 140, 130)),  # mud / rock
    4: ((225, 230, 240), (250, 250, 252)),  # snowfield
    5: ((150, 150, 145), (190, 180, 170)),  # zoo / human habitation
    6: ((70, 110, 110), (120, 150, 120)),  # swamp / riverside
    7: ((200, 170, 120), (235, 210, 160)),  # desert / gobi
    8: ((200, 200, 200), (230, 230, 230)),  # mugshot
}


def background(rng: np.random.Generator, width: int, height: int, kind: str | int = "scene") -> np.ndarray:
    """A smooth, lightly cluttered RGB background (low-frequency so JPEGs stay small)."""
    import cv2

    if isinstance(kind, int):
        top, bottom = (np.asarray(c, np.float32) for c in BACKGROUNDS[kind])
    elif kind == "studio":
        top, bottom = np.asarray(_colour(rng, 10, 60), np.float32), np.asarray(_colour(rng, 20, 80), np.float32)
    else:
        top, bottom = np.asarray(_colour(rng, 60, 230), np.float32), np.asarray(_colour(rng, 40, 200), np.float32)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).copy()
    grid = rng.normal(0, 18 if kind != 8 else 4, (4, 5, 3)).astype(np.float32)
    img += cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    clutter = 0 if kind in (8, "studio") else int(rng.integers(2, 7))
    for _ in range(clutter):
        colour = tuple(float(c) for c in (np.asarray(_colour(rng, 30, 220)) * 0.6 + img.mean(axis=(0, 1)) * 0.4))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(width // 10, width // 2)), int(rng.integers(height // 10, height // 2))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + w, y + h), colour, -1)
        else:
            cv2.ellipse(img, (x, y), (w // 2, h // 2), float(rng.uniform(0, 180)), 0, 360, colour, -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.2)
    return np.clip(img, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Cameras
# ----------------------------------------------------------------------------------------------


def scene_camera(rng: np.random.Generator, width: int, height: int, *, roll_sd: float = 0.08, pitch_sd: float = 0.06) -> Camera:
    """A camera at the world origin looking down -z, slightly pitched and rolled."""
    roll = float(rng.normal(0, roll_sd))
    if rng.random() < 0.05:
        roll += float(rng.choice([-1, 1]) * rng.uniform(0.3, 0.8))  # the occasional tilted photo
    pitch = float(rng.normal(0, pitch_sd))
    R, t = look_at(np.zeros(3), np.array([0.0, np.tan(pitch), -1.0]), roll=roll)
    f = float(rng.uniform(0.9, 1.5)) * max(width, height)
    cx = width / 2 + float(rng.normal(0, 0.02 * width))
    cy = height / 2 + float(rng.normal(0, 0.02 * height))
    return Camera(R, t, f, f, cx, cy, width, height)


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------


@dataclass
class Scene:
    camera: Camera
    figures: list[Figure]
    rendered: Rendered
    roles: list[str]  # per figure: "person", "crowd", "animal", "hand"
    meta: list[dict] = field(default_factory=list)  # per figure

    @property
    def width(self) -> int:
        return self.camera.width

    @property
    def height(self) -> int:
        return self.camera.height


def annotate(scene: Scene, figure: int, dataset: str, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(K, 3) [u, v, flag] and (K, 3) world points of one figure in a dataset's skeleton.

    ``decimals`` quantises u, v the way the release writes them before visibility is read, so
    the flags are honest at the written position.
    """
    ann = bodies.annotator(dataset)
    fig = scene.figures[figure]
    X = ann.points(fig)
    uv, depth = scene.camera.project(X)
    uv = np.where((depth > 0)[:, None], uv, np.nan)
    if decimals is not None:
        uv = np.round(uv, decimals)
    faces = facing(X, ann.normals(fig), scene.camera, ann.facing_cos)
    flags = visibility(scene.rendered, figure, uv, ann.parts, faces)
    return np.column_stack([uv, flags]), X


#: Share of people turned roughly toward the camera (the rest face any direction).
_FACING_SHARE = 0.7


def _person(rng: np.random.Generator, camera: Camera, u: float, v: float, h_px: float, style: str | None = None, yaw: float | None = None) -> Figure:
    """A random person whose pelvis projects at (u, v), about ``h_px`` pixels tall."""
    shape = bodies.sample_shape(rng)
    params = bodies.sample_biped_params(rng, style)
    if yaw is None:  # people mostly face the photographer
        yaw = float(rng.normal(0.0, 0.8)) if rng.random() < _FACING_SHARE else float(rng.uniform(-np.pi, np.pi))
    params["yaw"] = yaw
    depth = camera.fx * bodies.BIPED_HEIGHT * shape.scale / h_px
    trans = camera.backproject(u, v, depth)
    pose = bodies.BipedPose(bodies.biped_rotations(params), trans, (bodies.sample_hand_pose(rng), bodies.sample_hand_pose(rng)))
    fig = bodies.pose_biped(shape, pose, person_palette(rng))
    fig.meta.update(params=params, pose=pose)
    return fig


#: Pelvis height below the top of a standing person's box, as a fraction of the box height.
_PELVIS_FROM_TOP = 0.44


def people_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    *,
    count: tuple[int, int] = (1, 3),
    height_frac: tuple[float, float] = (0.55, 0.95),
    spread: float = 1.0,
    truncate: float = 0.15,
    crowd_cluster: bool = False,
    bg: str = "scene",
) -> Scene:
    """Several people; ``spread`` < 1 packs them together (OCHuman / CrowdPose occlusion)."""
    camera = scene_camera(rng, width, height)
    n = int(rng.integers(count[0], count[1] + 1))
    figures, roles = [], []
    anchor = np.array([rng.uniform(0.3, 0.7) * width, rng.uniform(0.45, 0.6) * height])
    for i in range(n):
        h = float(rng.uniform(*height_frac)) * height
        if spread < 1.0:
            u = anchor[0] + float(rng.normal(0, spread * 0.35 * h))
            top = anchor[1] - 0.5 * h + float(rng.normal(0, 0.08 * h))
        else:
            u = float(rng.uniform(0.15, 0.85)) * width
            top = float(rng.uniform(0.02, max(0.03, 1 - h / height - 0.02))) * height
        if rng.random() < truncate:
            u += float(rng.choice([-1, 1]) * rng.uniform(0.3, 0.6) * width)
            top += float(rng.uniform(-0.1, 0.35) * h)
        figures.append(_person(rng, camera, u, top + _PELVIS_FROM_TOP * h, h))
        roles.append("person")
    if crowd_cluster:
        cu, cv = rng.uniform(0.1, 0.9) * width, rng.uniform(0.2, 0.5) * height
        for _ in range(int(rng.integers(4, 7))):
            h = float(rng.uniform(0.1, 0.16)) * height
            figures.append(_person(rng, camera, cu + float(rng.normal(0, 0.05 * width)), cv + float(rng.normal(0, 0.02 * height)), h))
            roles.append("crowd")
    rendered = render(camera, figures, background(rng, width, height, bg))
    return Scene(camera, figures, rendered, roles, [{} for _ in figures])


def _fit_depth(make, camera: Camera, target_px: float, z0: float) -> float:
    """Depth at which the figure ``make(depth)`` spans ``target_px`` (its larger box side)."""
    from posebh.data.demo.render import project_primitive

    z = z0
    for _ in range(2):
        fig = make(z)
        pts = [project_primitive(p, camera) for p in fig.primitives]
        outline = np.concatenate([p[1] for p in pts if p is not None])
        size = float(np.max(outline.max(axis=0) - outline.min(axis=0)))
        z *= size / target_px
    return z


def animal_figure(
    camera: Camera, sp: bodies.Species, u: float, v: float, size_px: float, params: dict, yaw: float, palette: dict
) -> tuple[Figure, float]:
    """A posed animal whose torso centre projects near (u, v), spanning about ``size_px``."""

    def make(z: float) -> Figure:
        return bodies.pose_quadruped(sp, params, camera.backproject(u, v, z), yaw, palette)

    z = _fit_depth(make, camera, size_px, 5.0 * sp.length)
    return make(z), z


def _side_yaw(rng: np.random.Generator) -> float:
    """Mostly side and three-quarter views (the way animals are photographed)."""
    return float(rng.choice([-1, 1]) * np.pi / 2 + rng.normal(0, 0.6))


def animal_scene(rng: np.random.Generator, width: int, height: int, species: tuple[bodies.Species, ...], bg_code: int) -> Scene:
    """One to three animals of one species on a background of AP-10K's ``background`` kind."""
    camera = scene_camera(rng, width, height, roll_sd=0.05)
    sp = species[rng.integers(len(species))]
    n = int(rng.choice([1, 2, 3], p=[0.75, 0.2, 0.05]))
    palette = animal_palette(rng, sp)
    figures, roles, meta = [], [], []
    for i in range(n):
        size = float(rng.uniform(0.55, 0.95) if n == 1 else rng.uniform(0.35, 0.6)) * width
        u = float(rng.uniform(0.3, 0.7) if n == 1 else rng.uniform(0.2, 0.8)) * width
        v = float(rng.uniform(0.4, 0.6)) * height
        if rng.random() < 0.1:
            u += float(rng.choice([-1, 1]) * 0.35 * width)
        params = bodies.sample_quadruped_params(rng)
        fig, _ = animal_figure(camera, sp, u, v, size, params, _side_yaw(rng), palette)
        figures.append(fig)
        roles.append("animal")
        meta.append({"species": sp})
    rendered = render(camera, figures, background(rng, width, height, bg_code))
    return Scene(camera, figures, rendered, roles, meta)


@dataclass
class Clip:
    """An animal video clip: frames of one species with tracked animals."""

    species: bodies.Species
    folder: str
    scenes: list[Scene]
    tracks: list[int]  # track id per figure index (same order in every frame)
    bg_code: int


def animal_clip(rng: np.random.Generator, width: int, height: int, sp: bodies.Species, frames: int) -> Clip:
    """Animals walking smoothly across a fixed background for ``frames`` frames."""
    camera = scene_camera(rng, width, height, roll_sd=0.03, pitch_sd=0.03)
    bg_code = int(rng.integers(1, 8))
    bg = background(rng, width, height, bg_code)
    n = int(rng.choice([1, 2], p=[0.7, 0.3]))
    actors = []
    for i in range(n):
        palette = animal_palette(rng, sp)
        yaw = float(rng.choice([-1, 1]) * np.pi / 2 + rng.normal(0, 0.35))
        size = float(rng.uniform(0.45, 0.7) if n == 1 else rng.uniform(0.35, 0.5)) * width
        u, v = float(rng.uniform(0.35, 0.65)) * width, float(rng.uniform(0.45, 0.6)) * height
        style = str(rng.choice(["walk", "trot"]))
        base = bodies.sample_quadruped_params(rng, "stand")
        _, z = animal_figure(camera, sp, u, v, size, base, yaw, palette)
        root0 = camera.backproject(u, v, z)
        speed = float(rng.uniform(0.02, 0.06)) * sp.length * (2.0 if style == "trot" else 1.0)
        actors.append((palette, yaw, root0, style, base, float(rng.uniform(0, 2 * np.pi)), speed))
    scenes = []
    for f in range(frames):
        figures = []
        for palette, yaw, root0, style, base, phase0, speed in actors:
            phase = phase0 + f * (0.55 if style == "walk" else 0.8)
            params = dict(base) | bodies.gait_params(phase, 0.5 if style == "walk" else 0.8, style)
            params["tail_swing"] = base["tail_swing"] + 0.2 * np.sin(0.7 * f)
            heading = rot_y(yaw) @ np.array([0.0, 0.0, 1.0])
            figures.append(bodies.pose_quadruped(sp, params, root0 + f * speed * heading, yaw, palette))
        rendered = render(camera, figures, bg)
        scenes.append(Scene(camera, figures, rendered, ["animal"] * n, [{"species": sp} for _ in figures]))
    return Clip(sp, "", scenes, list(range(1, n + 1)), bg_code)


# ---- hands (InterHand2.6M) ----------------------------------------------------------------------


@dataclass
class Rig:
    """One capture's cameras, in world metres (written in mm)."""

    cameras: dict[str, Camera]


def capture_rig(rng: np.random.Generator, width: int, height: int, n_cameras: int, names: list[str]) -> Rig:
    """Cameras on a sphere about the hands' workspace at the origin, looking at it."""
    cams = {}
    for name in names[:n_cameras]:
        az, el = float(rng.uniform(-np.pi, np.pi)), float(rng.uniform(-0.5, 0.9))
        dist = float(rng.uniform(0.7, 1.1))
        pos = dist * np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
        R, t = look_at(pos, np.asarray(rng.normal(0, 0.02, 3)), roll=float(rng.normal(0, 0.3)))
        f = float(rng.uniform(2.6, 3.6)) * max(width, height)
        cx, cy = width / 2 + float(rng.normal(0, 5)), height / 2 + float(rng.normal(0, 5))
        cams[name] = Camera(R, t, f, f * float(rng.uniform(0.999, 1.001)), cx, cy, width, height)
    return Rig(cams)


@dataclass
class HandMotion:
    """Smooth hand motion of a sequence: origins, orientations and poses per frame."""

    sides: tuple[str, ...]
    origin: dict[str, np.ndarray]
    axis: dict[str, np.ndarray]
    angle0: dict[str, float]
    pose_a: dict[str, bodies.HandPose]
    pose_b: dict[str, bodies.HandPose]
    size: float
    speed: float

    def at(self, frame: int) -> dict[str, tuple[np.ndarray, np.ndarray, bodies.HandPose]]:
        out = {}
        w = 0.5 - 0.5 * np.cos(self.speed * frame)
        for s in self.sides:
            from posebh.data.demo.geometry import rotvec_to_matrix

            R = rotvec_to_matrix(self.axis[s] * (self.angle0[s] + 0.25 * np.sin(0.6 * self.speed * frame)))
            pose = bodies.HandPose((1 - w) * self.pose_a[s].curl + w * self.pose_b[s].curl, (1 - w) * self.pose_a[s].spread + w * self.pose_b[s].spread)
            origin = self.origin[s] + 0.01 * np.array([np.sin(0.5 * self.speed * frame), np.cos(0.4 * self.speed * frame), 0.0])
            out[s] = (origin, R, pose)
        return out


def hand_motion(rng: np.random.Generator, hand_type: str) -> HandMotion:
    sides = {"right": ("right",), "left": ("left",), "interacting": ("right", "left")}[hand_type]
    origin, axis, angle0, pa, pb = {}, {}, {}, {}, {}
    gap = float(rng.uniform(0.05, 0.09))
    for s in sides:
        offset = (-gap if s == "right" else gap) if len(sides) == 2 else 0.0
        origin[s] = np.array([offset, -0.08, 0.0]) + rng.normal(0, 0.01, 3)
        v = rng.normal(0, 1, 3)
        axis[s] = v / np.linalg.norm(v)
        angle0[s] = float(rng.uniform(0, np.pi))
        pa[s], pb[s] = bodies.sample_hand_pose(rng), bodies.sample_hand_pose(rng)
    return HandMotion(sides, origin, axis, angle0, pa, pb, float(rng.uniform(0.95, 1.1)), float(rng.uniform(0.2, 0.5)))


def hand_figures(hands: dict[str, tuple[np.ndarray, np.ndarray, bodies.HandPose]], size: float, palette: dict) -> list[Figure]:
    """The posed hands of one frame (world metres), in the order of ``hands``."""
    return [bodies.pose_hand(pose, side, origin, R, size, palette) for side, (origin, R, pose) in hands.items()]


def hand_scene(rng: np.random.Generator, camera: Camera, figures: list[Figure]) -> Scene:
    """The hands of one frame seen by one camera on a dark studio background."""
    rendered = render(camera, figures, background(rng, camera.width, camera.height, "studio"))
    return Scene(camera, figures, rendered, ["hand"] * len(figures), [{"side": f.meta["side"]} for f in figures])


# ---- 3DPW sequences -----------------------------------------------------------------------------


@dataclass
class Actor:
    shape: bodies.BipedShape
    palette: dict
    start: np.ndarray
    heading: float
    speed: float
    amplitude: float
    phase0: float
    base: dict
    hands: tuple


def pw3d_actor(rng: np.random.Generator, start: np.ndarray, heading: float | None = None) -> Actor:
    """A walker; ``heading`` (radians about +y) makes a pair walk side by side."""
    base = bodies.sample_biped_params(rng, "stand")
    return Actor(
        bodies.sample_shape(rng),
        person_palette(rng),
        start,
        float(rng.uniform(-np.pi, np.pi)) if heading is None else heading,
        float(rng.uniform(0.02, 0.045)),
        float(rng.uniform(0.6, 1.0)),
        float(rng.uniform(0, 2 * np.pi)),
        base,
        (bodies.sample_hand_pose(rng), bodies.sample_hand_pose(rng)),
    )


def actor_pose(actor: Actor, frame: int) -> tuple[bodies.BipedPose, dict]:
    """Walking along the actor's heading; the SMPL-like pose and its named angles."""
    phase = actor.phase0 + 0.35 * frame
    params = dict(actor.base) | bodies.walk_params(phase, actor.amplitude)
    params["yaw"] = actor.heading
    direction = rot_y(actor.heading) @ np.array([0.0, 0.0, 1.0])
    trans = actor.start + frame * actor.speed * direction
    trans = trans + np.array([0.0, 0.01 * abs(np.sin(phase)), 0.0])
    return bodies.BipedPose(bodies.biped_rotations(params), trans, actor.hands), params


def handheld_camera(rng: np.random.Generator, width: int, height: int, targets: np.ndarray, frames: int, distance: tuple[float, float] = (3.2, 4.2)) -> list[Camera]:
    """A handheld phone camera that follows ``targets`` (one point per frame) with a little shake."""
    f = float(rng.uniform(1.1, 1.4)) * height
    dist = float(rng.uniform(*distance))
    az = float(rng.uniform(-np.pi, np.pi))
    offset = np.array([dist * np.sin(az), float(rng.uniform(0.2, 0.6)), dist * np.cos(az)])
    drift = rng.normal(0, 0.005, 3)
    cams = []
    for k in range(frames):
        shake = 0.01 * np.array([np.sin(0.3 * k), np.sin(0.23 * k), 0.0])
        R, t = look_at(targets[k] + offset + k * drift + shake, targets[k], roll=0.02 * np.sin(0.2 * k))
        cams.append(Camera(R, t, f, f, width / 2, height / 2, width, height))
    return cams


def world_scene(camera: Camera, figures: list[Figure], bg: np.ndarray) -> Scene:
    return Scene(camera, figures, render(camera, figures, bg), ["person"] * len(figures), [{} for _ in figures])

