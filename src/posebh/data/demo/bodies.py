"""Body plans of the demo world: a 3D biped, a 3D quadruped with species variation and a 3D hand.

Each plan is a posable kinematic tree that yields *dense landmarks* (named 3D points, some with a
surface normal) and *primitives* (capsules and ellipsoids) to render. Datasets never see the
landmarks directly: each dataset's keypoints are a small table (:data:`ANNOTATIONS`) keyed by the
registry's keypoint names, whose values are landmarks or weighted means of landmarks. The
definitions differ between datasets the way they do between the real releases (MPII's pelvis is
the mean of its own hips, SMPL's pelvis is the root joint above them; COCO's hips sit higher and
more lateral than SMPL's; AIC's head top is further forward than MPII's; AIC's neck is low on the
throat, MPII's upper neck is under the chin; SMPL's "thumb" is the hand joint near the knuckles),
so a naive merge of skeletons is wrong and the prototypes have something real to discover.

Units are metres for bodies (the InterHand writer converts to mm). Body frames: +x is the body's
left, +y up, +z the facing direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from posebh import skeletons
from posebh.data.demo.geometry import euler, rot_x, rot_y, rot_z

#: A surface point (eye, nose, face contour) faces the camera when cos(normal, view) exceeds
#: this: grazing views still show a nose in profile.
FACING_COS = -0.1
#: Side points (shoulders, hips, ears) are seen from the front and the back alike and hide only
#: when viewed from the other side of the body.
LATERAL_COS = -0.45

# ----------------------------------------------------------------------------------------------
# Shared structures
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LandmarkSet:
    """Static description of a plan's dense landmarks: names and the body parts each lies on."""

    names: tuple[str, ...]
    parts: tuple[tuple[str, ...], ...]
    #: per landmark, the cosine between normal and view above which the point faces the camera
    facing_cos: tuple[float, ...] | None = None

    def cos(self) -> np.ndarray:
        return np.full(len(self.names), FACING_COS) if self.facing_cos is None else np.asarray(self.facing_cos)

    @property
    def index(self) -> dict[str, int]:
        return _index(self.names)


@lru_cache(maxsize=None)
def _index(names: tuple[str, ...]) -> dict[str, int]:
    return {n: i for i, n in enumerate(names)}


@dataclass
class Primitive:
    """A solid to render: ``capsule`` (a -> b, radii r0 -> r1) or ``ellipsoid`` (centre a, axes b
    whose columns are the semi-axis vectors). ``deco`` asks the renderer for painted details."""

    kind: str
    part: str
    material: str
    a: np.ndarray
    b: np.ndarray
    r0: float = 0.0
    r1: float = 0.0
    deco: str | None = None
    deco_points: np.ndarray | None = None  # world points the decoration is drawn through
    deco_normals: np.ndarray | None = None


@dataclass
class Figure:
    """One posed body in world coordinates."""

    plan: str  # "biped" | "quadruped" | "hand"
    landmarks: LandmarkSet
    points: np.ndarray  # (L, 3)
    normals: np.ndarray  # (L, 3); an all-zero row means "no facing test"
    primitives: list[Primitive]
    palette: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def point(self, name: str) -> np.ndarray:
        return self.points[self.landmarks.index[name]]


def _mirror_name(name: str) -> str:
    for a, b in (("l_", "r_"), ("lf_", "rf_"), ("lh_", "rh_"), ("lhand.", "rhand.")):
        if name.startswith(a):
            return b + name[len(a) :]
    return name


def _normalize(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(n > 0, v / np.where(n > 0, n, 1), 0.0)


def _ellipsoid_axes(R: np.ndarray, radii) -> np.ndarray:
    return R @ np.diag(np.asarray(radii, np.float64))


# ----------------------------------------------------------------------------------------------
# The hand (InterHand2.6M, COCO-WholeBody hands, the biped's hands)
# ----------------------------------------------------------------------------------------------

FINGERS = ("thumb", "index", "middle", "ring", "pinky")
_THUMB_JOINTS = ("cmc", "mcp", "ip", "tip")
_FINGER_JOINTS = ("mcp", "pip", "dip", "tip")
HAND_POINTS: tuple[str, ...] = ("wrist",) + tuple(
    f"{f}_{j}" for f in FINGERS for j in (_THUMB_JOINTS if f == "thumb" else _FINGER_JOINTS)
)
#: Canonical right hand (palm normal +z, fingers +y, thumb +x): base, rest direction, lengths.
_FINGER_BASE = {
    "thumb": (0.022, 0.022, 0.008),
    "index": (0.024, 0.088, 0.0),
    "middle": (0.004, 0.093, 0.0),
    "ring": (-0.015, 0.089, 0.0),
    "pinky": (-0.032, 0.080, 0.0),
}
_FINGER_SPREAD = {"thumb": 0.70, "index": 0.10, "middle": 0.0, "ring": -0.08, "pinky": -0.18}
_FINGER_LENGTHS = {
    "thumb": (0.040, 0.031, 0.026),
    "index": (0.042, 0.025, 0.021),
    "middle": (0.046, 0.029, 0.022),
    "ring": (0.043, 0.027, 0.021),
    "pinky": (0.034, 0.020, 0.019),
}
_FINGER_RADII = {"thumb": (0.012, 0.0105, 0.0095), "index": (0.0095, 0.0088, 0.008)}
#: The thumb lifts off the palm plane and curls across it.
_THUMB_LIFT = 0.35
_THUMB_BEND = _normalize((-0.55, 0.1, 0.83))
_PALM_CENTRE = (-0.004, 0.048, 0.0)
_PALM_RADII = (0.045, 0.052, 0.015)
#: Hand length (wrist to middle tip) of the canonical hand.
HAND_LENGTH = 0.19


@dataclass
class HandPose:
    """Per-finger flexion of the three joints (radians, toward the palm) and extra spread."""

    curl: np.ndarray  # (5, 3)
    spread: np.ndarray  # (5,)


def sample_hand_pose(rng: np.random.Generator, style: str | None = None) -> HandPose:
    """Open, relaxed, fist, point, pinch or random hands."""
    style = style or rng.choice(["open", "relaxed", "fist", "point", "pinch", "random"], p=[0.2, 0.3, 0.15, 0.1, 0.1, 0.15])
    base = {"open": 0.05, "relaxed": 0.45, "fist": 1.35, "point": 1.3, "pinch": 0.6, "random": 0.0}[style]
    curl = np.full((5, 3), base) + rng.normal(0, 0.12, (5, 3))
    if style == "point":
        curl[1] = rng.normal(0.05, 0.05, 3)
    if style == "pinch":
        curl[0] = [0.5, 0.3, 0.2]
        curl[1] = [0.7, 0.6, 0.3]
    if style == "random":
        curl = rng.uniform(0.0, 1.5, (5, 3))
    curl[0] *= 0.6  # the thumb bends less
    spread = rng.normal(0, 0.06, 5)
    return HandPose(np.clip(curl, -0.15, 1.7), spread)


def _finger_chain(finger: str, curl: np.ndarray, spread: float) -> np.ndarray:
    """(4, 3) base-to-tip points of one finger of the canonical right hand."""
    base = np.asarray(_FINGER_BASE[finger], np.float64)
    s = _FINGER_SPREAD[finger] + spread
    if finger == "thumb":
        d = _normalize((np.sin(s), np.cos(s), _THUMB_LIFT))
        n = _THUMB_BEND
    else:
        d = np.array([np.sin(s), np.cos(s), 0.0])
        n = np.array([0.0, 0.0, 1.0])
    n = _normalize(n - np.dot(n, d) * d)
    pts = [base]
    theta = 0.0
    for length, c in zip(_FINGER_LENGTHS[finger], curl):
        theta += c
        pts.append(pts[-1] + length * (np.cos(theta) * d + np.sin(theta) * n))
    return np.stack(pts)


def hand_local(pose: HandPose, side: str, size: float = 1.0) -> np.ndarray:
    """(21, 3) points of :data:`HAND_POINTS` in the hand frame (left hands mirror x)."""
    pts = [np.zeros(3)]
    for f, finger in enumerate(FINGERS):
        pts.extend(_finger_chain(finger, pose.curl[f], pose.spread[f]))
    out = np.stack(pts) * size
    if side == "left":
        out[:, 0] *= -1
    return out


def hand_point_parts(prefix: str, fine: bool, wrist_extra: tuple[str, ...] = ()) -> tuple[tuple[str, ...], ...]:
    """Parts of the 21 hand points: per finger when ``fine`` (InterHand), else the whole hand."""
    out = []
    for name in HAND_POINTS:
        if not fine:
            out.append((f"{prefix}hand",) + (wrist_extra if name == "wrist" else ()))
            continue
        finger, _, joint = name.partition("_")
        if name == "wrist":
            out.append((f"{prefix}palm",) + wrist_extra)
        elif joint in ("mcp", "cmc"):
            out.append((f"{prefix}{finger}", f"{prefix}palm"))
        else:
            out.append((f"{prefix}{finger}",))
    return tuple(out)


def hand_primitives(local: np.ndarray, origin: np.ndarray, R: np.ndarray, side: str, size: float, prefix: str, fine: bool) -> list[Primitive]:
    """Palm ellipsoid and one capsule per phalanx, placed by ``origin + R @ local``."""
    world = origin + local @ R.T
    mirror = np.diag([-1.0 if side == "left" else 1.0, 1.0, 1.0])
    centre = origin + R @ (mirror @ np.asarray(_PALM_CENTRE) * size)
    prims = [Primitive("ellipsoid", f"{prefix}palm" if fine else f"{prefix}hand", "skin", centre, _ellipsoid_axes(R, np.asarray(_PALM_RADII) * size))]
    for f, finger in enumerate(FINGERS):
        radii = _FINGER_RADII.get(finger, _FINGER_RADII["index"])
        chain = world[1 + 4 * f : 5 + 4 * f]
        part = f"{prefix}{finger}" if fine else f"{prefix}hand"
        if not fine:  # a body's hands are a few pixels wide: one capsule per finger is enough
            prims.append(Primitive("capsule", part, "skin", chain[0], chain[3], radii[0] * size, radii[2] * size))
            continue
        for s in range(3):
            r0 = radii[s] * size
            r1 = (radii[s + 1] if s + 1 < 3 else radii[s] * 0.9) * size
            prims.append(Primitive("capsule", part, "skin", chain[s], chain[s + 1], r0, r1))
    return prims


HAND_LANDMARKS = LandmarkSet(tuple(f"hand.{n}" for n in HAND_POINTS), hand_point_parts("", fine=True))


def pose_hand(pose: HandPose, side: str, origin: np.ndarray, R: np.ndarray, size: float = 1.0, palette: dict | None = None) -> Figure:
    """A free hand (InterHand): fine per-finger parts, landmarks named ``hand.<point>``."""
    local = hand_local(pose, side, size)
    pts = origin + local @ R.T
    prims = hand_primitives(local, origin, R, side, size, "", fine=True)
    return Figure("hand", HAND_LANDMARKS, pts, np.zeros_like(pts), prims, palette or {}, {"side": side})


# ----------------------------------------------------------------------------------------------
# The biped (COCO, AIC, MPII, COCO-WholeBody, CrowdPose, OCHuman, 3DPW)
# ----------------------------------------------------------------------------------------------

#: The biped's 24 joints in SMPL order (the 3DPW skeleton is a direct reading of them).
BIPED_JOINTS: tuple[str, ...] = (
    "pelvis", "l_hip", "r_hip", "spine1", "l_knee", "r_knee", "spine2", "l_ankle", "r_ankle",
    "spine3", "l_foot", "r_foot", "neck", "l_collar", "r_collar", "head", "l_shoulder",
    "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist", "l_hand", "r_hand",
)  # fmt: skip
BIPED_PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
#: Rest offsets from the parent (metres, a 1.70 m body, arms down); right side mirrors x.
_BIPED_REST = {
    "pelvis": (0.0, 0.0, 0.0),
    "l_hip": (0.09, -0.09, 0.0),
    "spine1": (0.0, 0.11, -0.01),
    "l_knee": (0.0, -0.40, 0.01),
    "spine2": (0.0, 0.13, 0.0),
    "l_ankle": (0.0, -0.40, -0.03),
    "spine3": (0.0, 0.05, 0.02),
    "l_foot": (0.0, -0.05, 0.12),
    "neck": (0.0, 0.21, -0.02),
    "l_collar": (0.07, 0.12, -0.01),
    "head": (0.0, 0.08, 0.03),
    "l_shoulder": (0.11, 0.03, -0.01),
    "l_elbow": (0.0, -0.27, 0.0),
    "l_wrist": (0.0, -0.25, 0.0),
    "l_hand": (0.0, -0.08, 0.0),
}
#: Pelvis height of the rest body standing on y = 0.
BIPED_PELVIS_HEIGHT = 0.95
BIPED_HEIGHT = 1.70
_JOINT_PARTS = {
    "pelvis": ("torso",),
    "l_hip": ("torso", "l_thigh"),
    "spine1": ("torso",),
    "l_knee": ("l_thigh", "l_shin"),
    "spine2": ("torso",),
    "l_ankle": ("l_shin", "l_foot"),
    "spine3": ("torso",),
    "l_foot": ("l_foot",),
    "neck": ("neck", "torso"),
    "l_collar": ("torso", "neck"),
    "head": ("head", "neck"),
    "l_shoulder": ("torso", "l_upper_arm"),
    "l_elbow": ("l_upper_arm", "l_forearm"),
    "l_wrist": ("l_forearm", "l_hand"),
    "l_hand": ("l_hand",),
}
_LATERAL = (1.0, 0.0, 0.0)
#: Surface and anatomical landmarks: (name, joint, offset in the joint's frame, parts, normal).
#: Left side only; the right side mirrors x. A normal enables the facing test; shoulder normals
#: turn with the chest (:data:`_NORMAL_FRAME`), not with the arm.
_BIPED_SURFACE = (
    ("head_top", "head", (0.0, 0.178, -0.01), ("head",), None),
    ("head_top_front", "head", (0.0, 0.166, 0.04), ("head",), None),
    ("nose", "head", (0.0, 0.052, 0.118), ("head",), (0.0, 0.0, 1.0)),
    ("l_ear", "head", (0.079, 0.07, -0.003), ("head",), _LATERAL),
    ("upper_neck", "neck", (0.0, 0.075, 0.02), ("neck", "head"), None),
    ("neck_front", "neck", (0.0, 0.02, 0.035), ("neck", "torso"), None),
    ("thorax", "spine3", (0.0, 0.165, 0.045), ("torso", "neck"), None),
    ("l_shoulder_top", "l_shoulder", (0.005, 0.045, -0.005), ("torso", "l_upper_arm"), _LATERAL),
    ("l_shoulder_out", "l_shoulder", (0.02, 0.025, 0.0), ("torso", "l_upper_arm"), _LATERAL),
    ("l_shoulder_mid", "l_shoulder", (0.0, 0.01, 0.0), ("torso", "l_upper_arm"), _LATERAL),
    ("l_hip_out", "pelvis", (0.13, -0.02, 0.0), ("torso", "l_thigh"), _LATERAL),
    ("l_hip_mid", "pelvis", (0.11, -0.06, 0.0), ("torso", "l_thigh"), _LATERAL),
    ("l_hip_low", "pelvis", (0.12, -0.045, -0.01), ("torso", "l_thigh"), _LATERAL),
    ("l_knee_front", "l_knee", (0.0, 0.0, 0.035), ("l_thigh", "l_shin"), None),
    ("l_ankle_out", "l_ankle", (0.025, 0.0, 0.0), ("l_shin", "l_foot"), None),
    ("l_big_toe", "l_foot", (-0.02, -0.02, 0.07), ("l_foot",), None),
    ("l_small_toe", "l_foot", (0.035, -0.02, 0.04), ("l_foot",), None),
    ("l_heel", "l_ankle", (0.0, -0.06, -0.06), ("l_foot",), None),
)
_NORMAL_FRAME = {"l_shoulder": "spine3", "r_shoulder": "spine3"}
#: The head as an ellipsoid in the head joint's frame; face points lie on its front.
HEAD_CENTRE = (0.0, 0.075, 0.012)
HEAD_RADII = (0.078, 0.105, 0.098)
_HAIR_CENTRE = (0.0, 0.092, -0.01)
_HAIR_RADII = (0.082, 0.095, 0.097)
#: Face points sit this far inside the head surface so they fall on the head's pixels.
_FACE_INSET = 0.002


def _face_template() -> np.ndarray:
    """(68, 2) iBUG-68 layout (x = subject's left, y up) in metres, head joint frame.

    Points are built for the subject's right side and mirrored for the left in the exact index
    pairs of the 68-point convention (tests check them against the registry's flip pairs).
    """
    p = np.zeros((68, 2))
    a = np.pi * np.arange(17) / 16
    p[:17, 0] = -0.070 * np.cos(a)
    p[:17, 1] = 0.085 - 0.092 * np.sin(a) ** 0.8
    bx = np.linspace(-0.058, -0.014, 5)
    p[17:22] = np.stack([bx, 0.110 + 0.008 * np.sin(np.linspace(0.3, 2.6, 5))], axis=1)
    p[27:31] = np.stack([np.zeros(4), np.linspace(0.098, 0.060, 4)], axis=1)
    p[31:36] = [(-0.016, 0.047), (-0.008, 0.044), (0.0, 0.043), (0.008, 0.044), (0.016, 0.047)]
    h = 0.005
    p[36:42] = [(-0.046, 0.088), (-0.038, 0.088 + h), (-0.028, 0.088 + h), (-0.020, 0.088), (-0.028, 0.088 - h), (-0.038, 0.088 - h)]
    p[48:51] = [(-0.026, 0.020), (-0.017, 0.026), (-0.007, 0.029)]
    p[51] = (0.0, 0.027)
    p[55:58] = [(0.017, 0.012), (0.007, 0.008), (0.0, 0.007)]
    p[60:63] = [(-0.022, 0.020), (-0.008, 0.022), (0.0, 0.022)]
    p[65:67] = [(0.008, 0.016), (0.0, 0.016)]
    for dst, src in FACE_MIRROR.items():
        p[dst] = (-p[src][0], p[src][1])
    return p


#: iBUG-68 mirror partners for the points built by mirroring (destination <- source).
FACE_MIRROR = {
    22: 21, 23: 20, 24: 19, 25: 18, 26: 17,
    42: 39, 43: 38, 44: 37, 45: 36, 46: 41, 47: 40,
    52: 50, 53: 49, 54: 48, 58: 56, 59: 55,
    63: 61, 64: 60, 67: 65,
}  # fmt: skip
#: Face template indices of the two eyes (subject's right, subject's left).
RIGHT_EYE = tuple(range(36, 42))
LEFT_EYE = tuple(range(42, 48))


def _on_head(xy: np.ndarray, inset: float = _FACE_INSET) -> tuple[np.ndarray, np.ndarray]:
    """Points and outward normals on the front of the head ellipsoid above template (x, y)."""
    c, r = np.asarray(HEAD_CENTRE), np.asarray(HEAD_RADII)
    x, y = xy[:, 0], xy[:, 1]
    q = np.clip(1 - ((x - c[0]) / r[0]) ** 2 - ((y - c[1]) / r[1]) ** 2, 0.0, 1.0)
    z = c[2] + r[2] * np.sqrt(q)
    pts = np.stack([x, y, z], axis=1)
    normals = _normalize((pts - c) / r**2)
    return pts - inset * normals, normals


@dataclass(frozen=True)
class BipedShape:
    """Body proportions; ``betas`` is the 10-vector written to 3DPW (only the first four matter)."""

    betas: tuple[float, ...]
    gender: str  # "m" | "f"

    @property
    def scale(self) -> float:
        return float(np.clip(1.0 + 0.05 * self.betas[0], 0.85, 1.15)) * (1.03 if self.gender == "m" else 0.97)

    @property
    def girth(self) -> float:
        return float(np.clip(1.0 + 0.08 * self.betas[1], 0.8, 1.3))

    @property
    def shoulder_width(self) -> float:
        return float(np.clip(1.0 + 0.05 * self.betas[2], 0.85, 1.15)) * (1.06 if self.gender == "m" else 0.95)

    @property
    def hip_width(self) -> float:
        return float(np.clip(1.0 + 0.05 * self.betas[3], 0.85, 1.15)) * (0.97 if self.gender == "m" else 1.06)


def sample_shape(rng: np.random.Generator) -> BipedShape:
    betas = np.round(rng.normal(0, 1, 10), 6)
    return BipedShape(tuple(float(b) for b in betas), str(rng.choice(["m", "f"])))


def _rest_offsets(shape: BipedShape) -> np.ndarray:
    out = np.zeros((len(BIPED_JOINTS), 3))
    for j, name in enumerate(BIPED_JOINTS):
        left = name.replace("r_", "l_", 1) if name.startswith("r_") else name
        off = np.array(_BIPED_REST[left], np.float64)
        if name in ("l_collar", "r_collar", "l_shoulder", "r_shoulder"):
            off[0] *= shape.shoulder_width
        if name in ("l_hip", "r_hip"):
            off[0] *= shape.hip_width
        if name.startswith("r_"):
            off[0] *= -1
        out[j] = off * shape.scale
    return out


def _biped_landmark_table() -> tuple[LandmarkSet, list[tuple[int, np.ndarray, np.ndarray | None]]]:
    """The biped's landmark set and, per landmark, (joint, offset at scale 1, normal, normal's joint)."""
    jidx = {n: i for i, n in enumerate(BIPED_JOINTS)}
    names, parts, spec, cos = [], [], [], []

    def add(name, joint, offset, part, normal, lateral=False):
        names.append(name)
        parts.append(tuple(part))
        cos.append(LATERAL_COS if lateral else FACING_COS)
        frame = jidx[_NORMAL_FRAME.get(joint, joint)]
        spec.append((jidx[joint], np.asarray(offset, np.float64), None if normal is None else _normalize(normal), frame))

    for j in BIPED_JOINTS:
        left = j.replace("r_", "l_", 1) if j.startswith("r_") else j
        jp = _JOINT_PARTS[left]
        add(f"J.{j}", j, (0.0, 0.0, 0.0), tuple(p.replace("l_", "r_", 1) if j.startswith("r_") else p for p in jp), None)
    for name, joint, off, part, normal in _BIPED_SURFACE:
        lateral = normal is _LATERAL
        add(name, joint, off, part, normal, lateral)
        if name.startswith("l_"):
            mirror = np.array([-1.0, 1.0, 1.0])
            add(
                _mirror_name(name),
                _mirror_name(joint),
                np.asarray(off) * mirror,
                tuple(_mirror_name(p) for p in part),
                None if normal is None else np.asarray(normal) * mirror,
                lateral,
            )
    template = _face_template()
    face_pts, face_normals = _on_head(template)
    for i in range(68):
        add(f"face.{i}", "head", face_pts[i], ("head",), face_normals[i])
    # COCO's eyes: the centres of the face template's eye contours
    for name, contour in (("l_eye", LEFT_EYE), ("r_eye", RIGHT_EYE)):
        pt, nr = _on_head(template[list(contour)].mean(axis=0, keepdims=True))
        add(name, "head", pt[0], ("head",), nr[0])
    for side, tag in (("l", "lhand."), ("r", "rhand.")):
        hand_parts = hand_point_parts(f"{side}_", fine=False, wrist_extra=(f"{side}_forearm",))
        for n, p in zip(HAND_POINTS, hand_parts):
            names.append(f"{tag}{n}")
            parts.append(p)
            cos.append(FACING_COS)
            spec.append((jidx[f"{side}_wrist"], None, None, None))  # filled from the hand model
    return LandmarkSet(tuple(names), tuple(parts), tuple(cos)), spec


BIPED_LANDMARKS, _BIPED_SPEC = _biped_landmark_table()

#: Canonical hand frame -> wrist frame at rest (arms down: fingers down, palm toward the body,
#: thumb forward); the columns are the images of the canonical x, y and z axes.
_HAND_ATTACH = {
    "right": np.column_stack([(0.0, 0.0, 1.0), (0.0, -1.0, 0.0), (1.0, 0.0, 0.0)]),
    "left": np.column_stack([(0.0, 0.0, -1.0), (0.0, -1.0, 0.0), (-1.0, 0.0, 0.0)]),
}


@dataclass
class BipedPose:
    """Local joint rotations (24, 3, 3), the root translation and the hand poses."""

    rotations: np.ndarray
    trans: np.ndarray
    hands: tuple[HandPose, HandPose]  # (left, right)


def biped_forward(shape: BipedShape, rotations: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward kinematics: global joint positions (24, 3) and rotations (24, 3, 3)."""
    offsets = _rest_offsets(shape)
    n = len(BIPED_JOINTS)
    G = np.zeros((n, 3, 3))
    P = np.zeros((n, 3))
    for j in range(n):
        p = BIPED_PARENTS[j]
        if p < 0:
            G[j] = rotations[j]
            P[j] = trans
        else:
            G[j] = G[p] @ rotations[j]
            P[j] = P[p] + G[p] @ offsets[j]
    return P, G


def pose_biped(shape: BipedShape, pose: BipedPose, palette: dict) -> Figure:
    """Landmarks, normals and primitives of a posed biped."""
    P, G = biped_forward(shape, pose.rotations, pose.trans)
    s, g = shape.scale, shape.girth
    L = len(BIPED_LANDMARKS.names)
    pts = np.zeros((L, 3))
    nrm = np.zeros((L, 3))
    for i, (j, off, normal, frame) in enumerate(_BIPED_SPEC):
        if off is None:
            continue
        pts[i] = P[j] + G[j] @ (off * s)
        if normal is not None:
            nrm[i] = G[frame] @ normal
    idx = BIPED_LANDMARKS.index
    hand_size = s * 0.95
    prims: list[Primitive] = []
    for k, (side, tag, prefix) in enumerate((("left", "lhand.", "l_"), ("right", "rhand.", "r_"))):
        j = BIPED_JOINTS.index(f"{prefix}wrist")
        Rh = G[j] @ _HAND_ATTACH[side]
        local = hand_local(pose.hands[k], side, hand_size)
        first = idx[f"{tag}wrist"]
        pts[first : first + len(HAND_POINTS)] = P[j] + local @ Rh.T
        prims += hand_primitives(local, P[j], Rh, side, hand_size, prefix, fine=False)

    J = {n: P[i] for i, n in enumerate(BIPED_JOINTS)}
    GR = {n: G[i] for i, n in enumerate(BIPED_JOINTS)}
    head_R = GR["head"]
    head_c = J["head"] + head_R @ np.asarray(HEAD_CENTRE) * s
    face = np.stack([pts[idx[f"face.{i}"]] for i in range(68)])
    face_n = np.stack([nrm[idx[f"face.{i}"]] for i in range(68)])
    prims.append(Primitive("ellipsoid", "head", "hair", J["head"] + head_R @ np.asarray(_HAIR_CENTRE) * s, _ellipsoid_axes(head_R, np.asarray(_HAIR_RADII) * s)))
    prims.append(Primitive("ellipsoid", "head", "skin", head_c, _ellipsoid_axes(head_R, np.asarray(HEAD_RADII) * s), deco="face", deco_points=face, deco_normals=face_n))
    prims.append(Primitive("capsule", "head", "skin", J["head"] + head_R @ np.array([0, 0.07, 0.10]) * s, pts[idx["nose"]], 0.012 * s, 0.011 * s))
    for ear in ("l_ear", "r_ear"):
        prims.append(Primitive("ellipsoid", "head", "skin", pts[idx[ear]] - head_R @ np.array([0, 0, 0.004]) * s, _ellipsoid_axes(head_R, np.array([0.012, 0.026, 0.016]) * s)))
    prims.append(Primitive("capsule", "neck", "skin", J["neck"], J["head"] + head_R @ np.array([0, 0.02, 0.0]) * s, 0.052 * s * g, 0.048 * s * g))
    sw, hw = shape.shoulder_width, shape.hip_width
    prims.append(Primitive("ellipsoid", "torso", "shirt", J["spine3"] + GR["spine3"] @ np.array([0, 0.085, -0.005]) * s, _ellipsoid_axes(GR["spine3"], np.array([0.175 * sw, 0.17, 0.11 * g]) * s)))
    prims.append(Primitive("ellipsoid", "torso", "shirt", J["spine1"] + GR["spine1"] @ np.array([0, 0.07, 0.0]) * s, _ellipsoid_axes(GR["spine1"], np.array([0.15 * g, 0.15, 0.105 * g]) * s)))
    prims.append(Primitive("ellipsoid", "torso", "pants", J["pelvis"] + GR["pelvis"] @ np.array([0, -0.03, -0.005]) * s, _ellipsoid_axes(GR["pelvis"], np.array([0.165 * hw * g, 0.12, 0.11 * g]) * s)))
    for side in ("l", "r"):
        prims += [
            Primitive("capsule", f"{side}_upper_arm", "sleeve", J[f"{side}_shoulder"], J[f"{side}_elbow"], 0.052 * s * g, 0.043 * s * g),
            Primitive("capsule", f"{side}_forearm", "forearm", J[f"{side}_elbow"], J[f"{side}_wrist"], 0.041 * s * g, 0.031 * s * g),
            Primitive("capsule", f"{side}_thigh", "pants", J[f"{side}_hip"], J[f"{side}_knee"], 0.078 * s * g, 0.056 * s * g),
            Primitive("capsule", f"{side}_shin", "shin", J[f"{side}_knee"], J[f"{side}_ankle"], 0.052 * s * g, 0.040 * s * g),
            Primitive("capsule", f"{side}_foot", "shoes", pts[idx[f"{side}_heel"]], J[f"{side}_foot"] + GR[f"{side}_foot"] @ np.array([0.008 if side == "l" else -0.008, -0.02, 0.06]) * s, 0.035 * s, 0.038 * s),
        ]
    return Figure("biped", BIPED_LANDMARKS, pts, nrm, prims, palette, {"joints": P, "shape": shape})


# ---- biped poses ----------------------------------------------------------------------------

_J = {n: i for i, n in enumerate(BIPED_JOINTS)}
BIPED_STYLES = ("stand", "walk", "arms", "reach", "crouch", "bend", "lunge", "wave")


def _side_sign(side: str) -> float:
    return 1.0 if side == "l" else -1.0


def biped_rotations(params: dict) -> np.ndarray:
    """Local rotations (24, 3, 3) from named angles (radians); see :func:`sample_biped_params`."""
    R = np.tile(np.eye(3), (len(BIPED_JOINTS), 1, 1))
    R[_J["pelvis"]] = rot_y(params.get("yaw", 0.0)) @ rot_x(params.get("lean", 0.0)) @ rot_z(params.get("tilt", 0.0))
    R[_J["spine1"]] = euler(x=params.get("spine_flex", 0.0) * 0.4, y=params.get("spine_twist", 0.0) * 0.5)
    R[_J["spine2"]] = euler(x=params.get("spine_flex", 0.0) * 0.35, y=params.get("spine_twist", 0.0) * 0.3, z=params.get("spine_side", 0.0))
    R[_J["spine3"]] = euler(x=params.get("spine_flex", 0.0) * 0.25, y=params.get("spine_twist", 0.0) * 0.2)
    R[_J["neck"]] = euler(x=params.get("neck_flex", 0.0) * 0.5, y=params.get("head_turn", 0.0) * 0.4)
    R[_J["head"]] = euler(x=params.get("neck_flex", 0.0) * 0.5, y=params.get("head_turn", 0.0) * 0.6, z=params.get("head_tilt", 0.0))
    for side in ("l", "r"):
        sg = _side_sign(side)
        R[_J[f"{side}_hip"]] = euler(x=-params.get(f"{side}_hip_flex", 0.0), z=sg * params.get(f"{side}_hip_abd", 0.0), y=sg * params.get(f"{side}_hip_twist", 0.0))
        R[_J[f"{side}_knee"]] = rot_x(params.get(f"{side}_knee", 0.0))
        R[_J[f"{side}_ankle"]] = rot_x(-params.get(f"{side}_ankle", 0.0))
        R[_J[f"{side}_collar"]] = rot_z(sg * params.get(f"{side}_shrug", 0.0))
        R[_J[f"{side}_shoulder"]] = euler(x=-params.get(f"{side}_sho_flex", 0.0), z=sg * params.get(f"{side}_sho_abd", 0.0), y=sg * params.get(f"{side}_sho_twist", 0.0))
        R[_J[f"{side}_elbow"]] = rot_x(-params.get(f"{side}_elbow", 0.0))
        R[_J[f"{side}_wrist"]] = euler(x=params.get(f"{side}_wrist_flex", 0.0), y=sg * params.get(f"{side}_wrist_twist", 0.0))
    return R


def sample_biped_params(rng: np.random.Generator, style: str | None = None) -> dict:
    """Named joint angles of a plausible pose of one of :data:`BIPED_STYLES`."""
    style = style or str(rng.choice(BIPED_STYLES, p=[0.2, 0.25, 0.12, 0.1, 0.08, 0.08, 0.07, 0.1]))
    n = lambda sd: float(rng.normal(0.0, sd))  # noqa: E731
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    p: dict = {"style": style, "lean": n(0.05), "tilt": n(0.03), "spine_flex": n(0.08), "spine_twist": n(0.15),
               "spine_side": n(0.05), "neck_flex": n(0.15), "head_turn": n(0.35), "head_tilt": n(0.08)}  # fmt: skip
    for side in ("l", "r"):
        p |= {f"{side}_hip_flex": n(0.08), f"{side}_hip_abd": abs(n(0.06)), f"{side}_knee": abs(n(0.08)),
              f"{side}_ankle": n(0.05), f"{side}_sho_flex": n(0.2), f"{side}_sho_abd": u(0.05, 0.3),
              f"{side}_elbow": abs(n(0.3)), f"{side}_wrist_flex": n(0.2), f"{side}_wrist_twist": n(0.3),
              f"{side}_sho_twist": n(0.2), f"{side}_hip_twist": n(0.1), f"{side}_shrug": n(0.05)}  # fmt: skip
    if style == "walk":
        phase = u(0, 2 * np.pi)
        p |= walk_params(phase, amplitude=u(0.6, 1.2))
    elif style == "arms":
        for side in ("l", "r"):
            p[f"{side}_sho_abd"] = u(0.8, 2.8)
            p[f"{side}_elbow"] = u(0.0, 1.6)
    elif style == "reach":
        side = str(rng.choice(["l", "r"]))
        p[f"{side}_sho_flex"] = u(0.9, 2.6)
        p[f"{side}_elbow"] = u(0.0, 0.5)
        p["spine_twist"] = n(0.3)
    elif style == "crouch":
        f = u(0.8, 1.6)
        for side in ("l", "r"):
            p[f"{side}_hip_flex"] = f + n(0.1)
            p[f"{side}_knee"] = 1.6 * f + n(0.1)
            p[f"{side}_ankle"] = -0.4 * f
            p[f"{side}_sho_flex"] = u(0.3, 1.2)
        p["lean"] = 0.35 * f
    elif style == "bend":
        p["spine_flex"] = u(0.5, 1.2)
        p["neck_flex"] = -u(0.0, 0.5)
        for side in ("l", "r"):
            p[f"{side}_hip_flex"] = u(0.2, 0.6)
            p[f"{side}_sho_flex"] = u(0.3, 1.4)
    elif style == "lunge":
        side, other = ("l", "r") if rng.random() < 0.5 else ("r", "l")
        p[f"{side}_hip_flex"] = u(0.6, 1.2)
        p[f"{side}_knee"] = u(0.6, 1.3)
        p[f"{other}_hip_flex"] = -u(0.2, 0.5)
        p[f"{other}_knee"] = u(0.1, 0.8)
    elif style == "wave":
        side = str(rng.choice(["l", "r"]))
        p[f"{side}_sho_abd"] = u(1.6, 2.6)
        p[f"{side}_elbow"] = u(0.6, 1.6)
        p[f"{side}_sho_twist"] = -u(0.5, 1.2)
    return p


def walk_params(phase: float, amplitude: float = 1.0) -> dict:
    """A walking cycle: legs swing in antiphase, arms against the legs, knees bend in swing."""
    a = amplitude
    s = np.sin(phase)
    return {
        "l_hip_flex": 0.45 * a * s,
        "r_hip_flex": -0.45 * a * s,
        "l_knee": 0.2 + 0.6 * a * max(0.0, np.sin(phase + 1.2)),
        "r_knee": 0.2 + 0.6 * a * max(0.0, np.sin(phase + 1.2 + np.pi)),
        "l_sho_flex": -0.35 * a * s,
        "r_sho_flex": 0.35 * a * s,
        "l_elbow": 0.3 + 0.2 * a * max(0.0, -s),
        "r_elbow": 0.3 + 0.2 * a * max(0.0, s),
        "l_sho_abd": 0.08,
        "r_sho_abd": 0.08,
    }


# ----------------------------------------------------------------------------------------------
# The quadruped (AP-10K, APT-36K)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Species:
    """Proportions (metres, degrees) and looks of one species."""

    name: str  # the category name as the release spells it
    category_id: int
    family: str
    length: float
    height: float
    width: float
    leg: float
    leg_r: float
    neck: float
    neck_angle: float
    neck_r: float
    head: float
    head_r: float
    snout: float
    tail: float
    tail_angle: float
    tail_r: float
    ear: float
    colors: tuple[tuple[int, int, int], ...]
    pattern: str = "plain"  # plain | stripes | spots | patches


_C = lambda *rgb: tuple(rgb)  # noqa: E731
#: AP-10K species (real category ids and families of the release).
AP10K_SPECIES: tuple[Species, ...] = (
    Species("cow", 5, "Bovidae", 1.5, 0.70, 0.55, 0.75, 0.07, 0.40, 25, 0.13, 0.45, 0.13, 0.15, 0.70, 75, 0.03, 0.12, (_C(240, 240, 235), _C(120, 80, 50), _C(40, 35, 30)), "patches"),
    Species("dog", 8, "Canidae", 0.65, 0.30, 0.24, 0.45, 0.045, 0.22, 45, 0.07, 0.20, 0.07, 0.10, 0.35, 35, 0.025, 0.07, (_C(190, 140, 80), _C(60, 50, 45), _C(230, 220, 200)), "plain"),
    Species("elephant", 20, "Elephantidae", 2.6, 1.60, 1.20, 1.55, 0.22, 0.30, 10, 0.40, 0.85, 0.45, 0.60, 1.0, 80, 0.05, 0.45, (_C(130, 125, 120), _C(150, 140, 135)), "plain"),
    Species("horse", 21, "Equidae", 1.45, 0.65, 0.45, 1.00, 0.065, 0.70, 50, 0.15, 0.55, 0.11, 0.20, 0.65, 60, 0.06, 0.10, (_C(110, 65, 35), _C(60, 40, 25), _C(200, 190, 170)), "plain"),
    Species("zebra", 22, "Equidae", 1.35, 0.62, 0.42, 0.95, 0.06, 0.60, 45, 0.14, 0.50, 0.10, 0.18, 0.50, 65, 0.04, 0.10, (_C(235, 235, 230),), "stripes"),
    Species("tiger", 32, "Felidae", 1.7, 0.55, 0.40, 0.75, 0.07, 0.30, 20, 0.14, 0.35, 0.13, 0.10, 0.90, 40, 0.04, 0.06, (_C(225, 130, 40),), "stripes"),
    Species("giraffe", 33, "Giraffidae", 1.8, 0.90, 0.55, 1.70, 0.07, 1.80, 68, 0.12, 0.55, 0.10, 0.18, 0.80, 75, 0.03, 0.10, (_C(215, 170, 100),), "spots"),
    Species("pig", 48, "Suidae", 1.0, 0.50, 0.40, 0.40, 0.06, 0.12, 5, 0.18, 0.35, 0.15, 0.12, 0.20, 20, 0.015, 0.09, (_C(235, 175, 165), _C(60, 50, 50)), "plain"),
    Species("brown bear", 51, "Ursidae", 1.6, 0.80, 0.65, 0.75, 0.12, 0.30, 15, 0.22, 0.38, 0.18, 0.14, 0.10, 30, 0.04, 0.08, (_C(100, 65, 40), _C(70, 50, 35)), "plain"),
    Species("cat", 24, "Felidae", 0.45, 0.20, 0.15, 0.26, 0.03, 0.10, 40, 0.045, 0.12, 0.06, 0.03, 0.35, -20, 0.015, 0.05, (_C(150, 150, 150), _C(230, 160, 80), _C(40, 40, 40)), "stripes"),
)
#: APT-36K species as the raw file spells them (misspellings kept), with their folder names.
APT36K_SPECIES: tuple[tuple[Species, str], ...] = (
    (Species("wolf", 29, "Canidae", 1.0, 0.40, 0.30, 0.70, 0.05, 0.30, 40, 0.09, 0.26, 0.09, 0.12, 0.45, 45, 0.04, 0.08, (_C(120, 115, 110), _C(90, 80, 70)), "plain"), "29wolf"),
    (Species("hourse", 12, "Equidae", 1.45, 0.65, 0.45, 1.00, 0.065, 0.70, 50, 0.15, 0.55, 0.11, 0.20, 0.65, 60, 0.06, 0.10, (_C(150, 95, 55), _C(40, 30, 25)), "plain"), "12horse"),
    (Species("raccon", 17, "Procyonidae", 0.55, 0.28, 0.22, 0.24, 0.035, 0.10, 20, 0.07, 0.14, 0.08, 0.05, 0.28, 30, 0.05, 0.05, (_C(125, 120, 115),), "stripes"),  "17raccoon"),
)  # fmt: skip

QUADRUPED_PARTS = ("body", "neck", "head", "tail", "lf_upper", "lf_lower", "rf_upper", "rf_lower", "lh_upper", "lh_lower", "rh_upper", "rh_lower")
_Q_LANDMARKS = (
    ("l_eye", ("head",)), ("r_eye", ("head",)), ("nose", ("head",)), ("neck_base", ("neck", "body")),
    ("tail_root", ("tail", "body")),
    ("lf_shoulder", ("body", "lf_upper")), ("lf_elbow", ("lf_upper", "lf_lower")), ("lf_paw", ("lf_lower",)),
    ("rf_shoulder", ("body", "rf_upper")), ("rf_elbow", ("rf_upper", "rf_lower")), ("rf_paw", ("rf_lower",)),
    ("lh_hip", ("body", "lh_upper")), ("lh_knee", ("lh_upper", "lh_lower")), ("lh_paw", ("lh_lower",)),
    ("rh_hip", ("body", "rh_upper")), ("rh_knee", ("rh_upper", "rh_lower")), ("rh_paw", ("rh_lower",)),
    ("head_joint", ("head", "neck")), ("withers", ("body", "neck")),
)  # fmt: skip
QUADRUPED_LANDMARKS = LandmarkSet(
    tuple(n for n, _ in _Q_LANDMARKS),
    tuple(p for _, p in _Q_LANDMARKS),
    tuple(LATERAL_COS if n.endswith(("_shoulder", "_hip")) else FACING_COS for n, _ in _Q_LANDMARKS),
)
QUADRUPED_STYLES = ("stand", "walk", "trot", "graze", "alert")


def sample_quadruped_params(rng: np.random.Generator, style: str | None = None, phase: float | None = None) -> dict:
    """Leg swings and flexions, neck, head and tail angles (radians) of one pose."""
    style = style or str(rng.choice(QUADRUPED_STYLES, p=[0.25, 0.3, 0.15, 0.15, 0.15]))
    n = lambda sd: float(rng.normal(0.0, sd))  # noqa: E731
    p = {"style": style, "neck_pitch": n(0.12), "head_pitch": n(0.15), "head_turn": n(0.2), "tail_lift": n(0.25),
         "tail_curl": n(0.3), "tail_swing": n(0.3), "body_pitch": n(0.04)}  # fmt: skip
    for leg in ("lf", "rf", "lh", "rh"):
        p[f"{leg}_swing"] = n(0.1)
        p[f"{leg}_flex"] = abs(n(0.1))
    if style in ("walk", "trot"):
        p |= gait_params(rng.uniform(0, 2 * np.pi) if phase is None else phase, 0.5 if style == "walk" else 0.8, style)
    elif style == "graze":
        p["neck_pitch"] = -float(rng.uniform(0.6, 1.2))
        p["head_pitch"] = -float(rng.uniform(0.3, 0.8))
    elif style == "alert":
        p["neck_pitch"] = float(rng.uniform(0.1, 0.4))
        p["head_turn"] = n(0.5)
        p["tail_lift"] = float(rng.uniform(0.2, 0.8))
    return p


_GAIT_OFFSETS = {"walk": {"lf": 0.0, "rh": 0.5, "rf": 1.0, "lh": 1.5}, "trot": {"lf": 0.0, "rh": 0.0, "rf": 1.0, "lh": 1.0}}


def gait_params(phase: float, amplitude: float, gait: str = "walk") -> dict:
    """Leg swing and flexion of a walk or trot at ``phase`` (legs offset in half-cycles)."""
    out = {}
    for leg, off in _GAIT_OFFSETS[gait].items():
        ph = phase + np.pi * off
        out[f"{leg}_swing"] = 0.45 * amplitude * np.sin(ph)
        out[f"{leg}_flex"] = 0.7 * amplitude * max(0.0, np.sin(ph + 1.3))
    return out


def pose_quadruped(sp: Species, params: dict, root: np.ndarray, yaw: float, palette: dict, size: float = 1.0) -> Figure:
    """Landmarks and primitives of a posed quadruped standing at ``root`` (torso centre)."""
    Rb = rot_y(yaw) @ rot_x(-params.get("body_pitch", 0.0))
    L, H, W, leg = sp.length * size, sp.height * size, sp.width * size, sp.leg * size
    at = lambda v: root + Rb @ np.asarray(v, np.float64)  # noqa: E731
    pts: dict[str, np.ndarray] = {}
    nrm: dict[str, np.ndarray] = {}
    prims: list[Primitive] = [Primitive("ellipsoid", "body", "fur", root.copy(), _ellipsoid_axes(Rb, (W / 2, H / 2, L / 2 * 1.05)))]
    # legs: swing about x (forward), the lower segment flexes back (front) or forward (hind)
    for leg_name, zf, hind in (("lf", 0.36, False), ("rf", 0.36, False), ("lh", -0.38, True), ("rh", -0.38, True)):
        side = 1.0 if leg_name[0] == "l" else -1.0
        top = at((side * 0.3 * W, -0.22 * H, zf * L))
        swing = params.get(f"{leg_name}_swing", 0.0) + (0.25 if hind else 0.0)
        flex = params.get(f"{leg_name}_flex", 0.0) + (0.55 if hind else 0.05)
        Ru = Rb @ rot_x(-swing)
        upper_len, lower_len = (0.52, 0.55) if hind else (0.5, 0.5)
        mid = top + Ru @ np.array([0.0, -upper_len * leg, 0.0])
        Rl = Ru @ rot_x(flex if not hind else -flex)
        paw = mid + Rl @ np.array([0.0, -lower_len * leg, 0.0])
        names = ("hip", "knee") if hind else ("shoulder", "elbow")
        pts[f"{leg_name}_{names[0]}"] = top + Rb @ np.array([side * 0.12 * W, 0.0, 0.0])
        nrm[f"{leg_name}_{names[0]}"] = Rb @ np.array([side, 0.0, 0.0])
        pts[f"{leg_name}_{names[1]}"] = mid
        pts[f"{leg_name}_paw"] = paw
        r = sp.leg_r * size
        prims.append(Primitive("capsule", f"{leg_name}_upper", "fur", top, mid, r * (1.6 if hind else 1.3), r))
        prims.append(Primitive("capsule", f"{leg_name}_lower", "legs", mid, paw, r * 0.9, r * 0.75))
    # neck and head
    neck_base = at((0.0, 0.22 * H, 0.44 * L))
    a = np.radians(sp.neck_angle) + params.get("neck_pitch", 0.0)
    Rn = Rb @ rot_y(params.get("head_turn", 0.0) * 0.5)
    head_j = neck_base + Rn @ (sp.neck * size * np.array([0.0, np.sin(a), np.cos(a)]))
    Rh = Rn @ rot_y(params.get("head_turn", 0.0) * 0.5) @ rot_x(-params.get("head_pitch", 0.0) + 0.25)
    hl, hr = sp.head * size, sp.head_r * size
    pts["neck_base"] = neck_base
    pts["withers"] = at((0.0, 0.45 * H, 0.32 * L))
    pts["head_joint"] = head_j
    prims.append(Primitive("capsule", "neck", "fur", neck_base, head_j, sp.neck_r * size, sp.neck_r * size * 0.8))
    head_c = head_j + Rh @ np.array([0.0, 0.0, 0.3 * hl])
    tip = head_j + Rh @ np.array([0.0, -0.25 * hr, hl + sp.snout * size])
    pts["nose"], nrm["nose"] = tip, Rh @ np.array([0.0, 0.0, 1.0])
    eyes = []
    for side, name in ((1.0, "l_eye"), (-1.0, "r_eye")):
        pts[name] = head_j + Rh @ np.array([side * 0.62 * hr, 0.3 * hr, 0.42 * hl])
        nrm[name] = Rh @ _normalize((side, 0.2, 0.6))
        eyes.append(name)
        prims.append(Primitive("ellipsoid", "head", "fur", head_j + Rh @ np.array([side * 0.5 * hr, 0.95 * hr, 0.05 * hl]), _ellipsoid_axes(Rh, np.array([0.35, 0.6, 0.25]) * sp.ear * size)))
    prims.append(Primitive("ellipsoid", "head", "fur", head_c, _ellipsoid_axes(Rh, (hr, hr * 0.95, 0.55 * hl)), deco="animal_face",
                           deco_points=np.stack([pts[e] for e in eyes] + [tip]), deco_normals=np.stack([nrm[e] for e in eyes] + [nrm["nose"]])))  # fmt: skip
    prims.append(Primitive("capsule", "head", "fur", head_j + Rh @ np.array([0.0, -0.05 * hr, 0.5 * hl]), tip, 0.6 * hr, 0.42 * hr))
    # tail
    base = at((0.0, 0.25 * H, -0.5 * L))
    pts["tail_root"] = base
    ta = -np.radians(sp.tail_angle) + params.get("tail_lift", 0.0)
    Rt = Rb @ rot_y(params.get("tail_swing", 0.0))
    seg = sp.tail * size / 3
    p0 = base
    for k in range(3):
        ang = ta + k * params.get("tail_curl", 0.0) * 0.5
        p1 = p0 + Rt @ (seg * np.array([0.0, np.sin(ang), -np.cos(ang)]))
        prims.append(Primitive("capsule", "tail", "fur", p0, p1, sp.tail_r * size * (1.0 - 0.2 * k), sp.tail_r * size * (0.8 - 0.2 * k)))
        p0 = p1
    P = np.stack([pts[n] for n in QUADRUPED_LANDMARKS.names])
    N = np.stack([nrm.get(n, np.zeros(3)) for n in QUADRUPED_LANDMARKS.names])
    return Figure("quadruped", QUADRUPED_LANDMARKS, P, N, prims, palette, {"species": sp.name})


# ----------------------------------------------------------------------------------------------
# Dataset annotation tables: registry keypoint name -> landmark (or weighted landmarks)
# ----------------------------------------------------------------------------------------------

#: Which body plan each dataset annotates.
PLAN_OF = {
    "coco": "biped", "ochuman": "biped", "aic": "biped", "mpii": "biped", "crowdpose": "biped",
    "coco_wholebody": "biped", "3dpw": "biped", "openpose18": "biped",
    "ap10k": "quadruped", "apt36k": "quadruped", "interhand": "hand",
}  # fmt: skip

_COCO = {
    "nose": "nose", "left_eye": "l_eye", "right_eye": "r_eye", "left_ear": "l_ear", "right_ear": "r_ear",
    "left_shoulder": "l_shoulder_out", "right_shoulder": "r_shoulder_out",
    "left_elbow": "J.l_elbow", "right_elbow": "J.r_elbow", "left_wrist": "J.l_wrist", "right_wrist": "J.r_wrist",
    "left_hip": "l_hip_out", "right_hip": "r_hip_out", "left_knee": "l_knee_front", "right_knee": "r_knee_front",
    "left_ankle": "l_ankle_out", "right_ankle": "r_ankle_out",
}  # fmt: skip
_AIC = {
    "right_shoulder": "r_shoulder_top", "right_elbow": "J.r_elbow", "right_wrist": "J.r_wrist",
    "left_shoulder": "l_shoulder_top", "left_elbow": "J.l_elbow", "left_wrist": "J.l_wrist",
    "right_hip": "r_hip_low", "right_knee": "J.r_knee", "right_ankle": "J.r_ankle",
    "left_hip": "l_hip_low", "left_knee": "J.l_knee", "left_ankle": "J.l_ankle",
    "head_top": "head_top_front", "neck": "neck_front",
}  # fmt: skip
_MPII = {
    "right_ankle": "J.r_ankle", "right_knee": "J.r_knee", "right_hip": "r_hip_mid", "left_hip": "l_hip_mid",
    "left_knee": "J.l_knee", "left_ankle": "J.l_ankle", "pelvis": {"l_hip_mid": 0.5, "r_hip_mid": 0.5},
    "thorax": "thorax", "upper_neck": "upper_neck", "head_top": "head_top",
    "right_wrist": "J.r_wrist", "right_elbow": "J.r_elbow", "right_shoulder": "r_shoulder_mid",
    "left_shoulder": "l_shoulder_mid", "left_elbow": "J.l_elbow", "left_wrist": "J.l_wrist",
}  # fmt: skip
_CROWDPOSE = {
    "left_shoulder": "l_shoulder_out", "right_shoulder": "r_shoulder_out", "left_elbow": "J.l_elbow",
    "right_elbow": "J.r_elbow", "left_wrist": "J.l_wrist", "right_wrist": "J.r_wrist", "left_hip": "l_hip_out",
    "right_hip": "r_hip_out", "left_knee": "l_knee_front", "right_knee": "r_knee_front",
    "left_ankle": "l_ankle_out", "right_ankle": "r_ankle_out", "head": "head_top_front", "neck": "neck_front",
}  # fmt: skip
#: SMPL joints are the kinematic joints themselves; "jaw" is SMPL's head joint and the "thumbs"
#: are SMPL's hand joints (near the knuckles), as in PoseBH's naming.
_SMPL_NAMES = {"jaw": "head", "left_thumb": "l_hand", "right_thumb": "r_hand"}
_3DPW = {
    n: f"J.{_SMPL_NAMES.get(n, n.replace('left_', 'l_').replace('right_', 'r_'))}" for n in skeletons.get("3dpw").keypoints
}
#: OpenPose's COCO-18 order, used only for 3DPW's ``poses2d`` field (not a registry skeleton).
OPENPOSE18 = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
_OPENPOSE = {n: _COCO[n] for n in OPENPOSE18 if n in _COCO} | {"neck": {"l_shoulder_out": 0.5, "r_shoulder_out": 0.5}}
_AP10K = {
    "left_eye": "l_eye", "right_eye": "r_eye", "nose": "nose", "neck": "neck_base", "root_of_tail": "tail_root",
    "left_shoulder": "lf_shoulder", "left_elbow": "lf_elbow", "left_front_paw": "lf_paw",
    "right_shoulder": "rf_shoulder", "right_elbow": "rf_elbow", "right_front_paw": "rf_paw",
    "left_hip": "lh_hip", "left_knee": "lh_knee", "left_back_paw": "lh_paw",
    "right_hip": "rh_hip", "right_knee": "rh_knee", "right_back_paw": "rh_paw",
}  # fmt: skip
#: Registry hand names (COCO-WholeBody's ``thumb1`` .. and InterHand's) -> hand model points.
_REGISTRY_FINGERS = {"thumb": "thumb", "forefinger": "index", "middle_finger": "middle", "ring_finger": "ring", "pinky_finger": "pinky"}


def _hand_point(registry_name: str) -> str:
    """``forefinger2`` -> ``index_pip``; ``hand_root``/``wrist`` -> ``wrist`` (1 = base, 4 = tip)."""
    if registry_name in ("hand_root", "wrist"):
        return "wrist"
    finger, number = registry_name[:-1], int(registry_name[-1])
    ours = _REGISTRY_FINGERS[finger]
    joints = _THUMB_JOINTS if ours == "thumb" else _FINGER_JOINTS
    return f"{ours}_{joints[number - 1]}"


def _wholebody() -> dict:
    sk = skeletons.get("coco_wholebody")
    table = dict(_COCO)
    foot = {"big_toe": "big_toe", "small_toe": "small_toe", "heel": "heel"}
    for name in sk.keypoints[slice(*sk.parts["foot"])]:
        side, _, rest = name.partition("_")
        table[name] = f"{side[0]}_{foot[rest]}"
    for i, name in enumerate(sk.keypoints[slice(*sk.parts["face"])]):
        table[name] = f"face.{i}"
    for part, tag in (("left_hand", "lhand."), ("right_hand", "rhand.")):
        for name in sk.keypoints[slice(*sk.parts[part])]:
            table[name] = tag + _hand_point(name.split("_", 1)[1])
    return table


ANNOTATIONS: dict[str, dict] = {
    "coco": _COCO,
    "ochuman": _COCO,
    "aic": _AIC,
    "mpii": _MPII,
    "crowdpose": _CROWDPOSE,
    "coco_wholebody": _wholebody(),
    "3dpw": _3DPW,
    "openpose18": _OPENPOSE,
    "ap10k": _AP10K,
    "apt36k": _AP10K,
    "interhand": {n: f"hand.{_hand_point(n)}" for n in skeletons.get("interhand").keypoints},
}


def keypoint_names(dataset: str) -> tuple[str, ...]:
    return OPENPOSE18 if dataset == "openpose18" else skeletons.get(dataset).keypoints


@dataclass(frozen=True)
class Annotator:
    """A dataset's keypoints as a linear map of a plan's landmarks, with visibility rules."""

    dataset: str
    weights: np.ndarray  # (K, L)
    parts: tuple[frozenset[str], ...]  # parts a keypoint may be seen on
    normal_of: np.ndarray  # (K,) landmark whose normal is the keypoint's, -1 for none
    facing_cos: np.ndarray  # (K,) facing threshold of that landmark

    def points(self, figure: Figure) -> np.ndarray:
        return self.weights @ figure.points

    def normals(self, figure: Figure) -> np.ndarray:
        out = np.zeros((len(self.normal_of), 3))
        has = self.normal_of >= 0
        out[has] = figure.normals[self.normal_of[has]]
        return out


@lru_cache(maxsize=None)
def annotator(dataset: str) -> Annotator:
    """Compile a dataset's table against its plan's landmark set (checked against the registry)."""
    plan = PLAN_OF[dataset]
    lm = {"biped": BIPED_LANDMARKS, "quadruped": QUADRUPED_LANDMARKS, "hand": HAND_LANDMARKS}[plan]
    table = ANNOTATIONS[dataset]
    names = keypoint_names(dataset)
    if set(table) != set(names):
        raise ValueError(f"{dataset}: annotation table names differ from the registry: {sorted(set(table) ^ set(names))}")
    W = np.zeros((len(names), len(lm.names)))
    parts, normal_of = [], np.full(len(names), -1)
    for k, name in enumerate(names):
        spec = table[name]
        terms = {spec: 1.0} if isinstance(spec, str) else spec
        ps: set[str] = set()
        for lname, w in terms.items():
            i = lm.index[lname]
            W[k, i] = w
            ps.update(lm.parts[i])
        if isinstance(spec, str):
            normal_of[k] = lm.index[spec]
        parts.append(frozenset(ps))
    cos = np.where(normal_of >= 0, lm.cos()[np.maximum(normal_of, 0)], FACING_COS)
    return Annotator(dataset, W, tuple(parts), normal_of, cos)
