"""The skeleton registry against values typed from reference/datasets.md and posebh-method.md 1.4,
and against the keypoint names the real sample files carry."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from posebh import skeletons
from posebh.skeletons import PAPER_MDT_DATASETS, Skeleton, get, mdt_space

from conftest import sample

EXPECTED_SIZES = {
    "coco": 17, "aic": 14, "mpii": 16, "ap10k": 17, "apt36k": 17, "coco_wholebody": 133,
    "crowdpose": 14, "ochuman": 17, "interhand": 21, "3dpw": 24,
}  # fmt: skip


@pytest.mark.parametrize(("name", "k"), EXPECTED_SIZES.items())
def test_sizes_and_consistent_lengths(name, k):
    s = get(name)
    assert s.name == name
    assert s.num_keypoints == k
    for seq in (s.sigmas, s.joint_weights):
        assert seq is None or len(seq) == k
    assert all(n.isascii() and n == n.lower() and " " not in n for n in s.keypoints)
    assert not set(s.upper_body) & set(s.lower_body)


def test_every_entry_is_listed():
    assert set(skeletons.SKELETONS) == set(EXPECTED_SIZES)


def test_paper_mdt_space():
    space = mdt_space(PAPER_MDT_DATASETS)
    assert space.total == 214
    assert space.offsets == (0, 17, 31, 47, 64, 81)
    assert space.slice("coco_wholebody") == slice(81, 214)
    assert space.global_index("mpii", 15) == 46
    names = space.names()
    assert len(names) == 214 and names[47] == "ap10k/left_eye" and names[64] == "apt36k/left_eye"


def test_owner_global_index_round_trip():
    space = mdt_space(PAPER_MDT_DATASETS)
    for g in range(space.total):
        d, local = space.owner(g)
        assert space.global_index(d, local) == g
    with pytest.raises(IndexError):
        space.owner(214)
    with pytest.raises(IndexError):
        space.global_index("aic", 14)


def test_mdt_space_accepts_aliases_and_rejects_duplicates():
    assert mdt_space(["wholebody", "pw3d"]).datasets == ("coco_wholebody", "3dpw")
    with pytest.raises(ValueError):
        mdt_space(["coco", "coco"])


@pytest.mark.parametrize("name", EXPECTED_SIZES)
def test_flip_index_is_an_involution_that_follows_the_names(name):
    s = get(name)
    perm = s.flip_index()
    assert sorted(perm) == list(range(s.num_keypoints))
    assert [perm[p] for p in perm] == list(range(s.num_keypoints))
    face = range(*s.parts["face"]) if "face" in s.parts else range(0)
    for i, n in enumerate(s.keypoints):
        if n.startswith("left_"):
            assert s.keypoints[perm[i]] == "right_" + n[len("left_") :]
        elif n.startswith("right_"):
            assert s.keypoints[perm[i]] == "left_" + n[len("right_") :]
        elif i not in face:
            assert perm[i] == i, n


def test_spot_values():
    coco, aic, wb, pw3d = get("coco"), get("aic"), get("coco_wholebody"), get("3dpw")
    assert coco.sigmas[coco.index("left_hip")] == pytest.approx(0.107)
    assert aic.sigmas[0] == pytest.approx(0.01388152)
    assert aic.joint_weights == (1, 1.2, 1.5, 1, 1.2, 1.5, 1, 1.2, 1.5, 1, 1.2, 1.5, 1, 1)
    assert pw3d.sigmas[pw3d.index("jaw")] == pytest.approx(0.035)
    assert get("mpii").sigmas[12] == pytest.approx(0.179)
    assert get("crowdpose").sigmas[-1] == pytest.approx(0.079)
    perm = wb.flip_index()
    assert perm[23] == 39 and perm[63] == 70 and perm[88] == 90
    assert all(perm[91 + i] == 112 + i for i in range(21))
    assert (perm[17], perm[18], perm[19]) == (20, 21, 22)
    assert wb.sigmas[17] == pytest.approx(0.068) and wb.sigmas[91] == pytest.approx(0.029)
    assert wb.sigmas[23] == pytest.approx(0.042) and wb.sigmas[132] == pytest.approx(0.031)
    assert wb.keypoints[23] == "face-0" and wb.keypoints[90] == "face-67"
    assert wb.keypoints[91] == "left_hand_root" and wb.keypoints[95] == "left_thumb4"
    assert wb.keypoints[112] == "right_hand_root" and wb.keypoints[132] == "right_pinky_finger4"


def test_area_rules_and_categories():
    assert {n for n, s in skeletons.SKELETONS.items() if s.area_rule == "0.53wh"} == {"aic", "crowdpose", "3dpw"}
    assert get("ap10k").area_rule == get("apt36k").area_rule == "annotation"
    assert get("ap10k").category == get("apt36k").category == "animal"
    assert get("interhand").category == "hand"
    assert skeletons.OKS_BOX_AREA_FACTOR == 0.53


def test_shared_skeletons_keep_their_own_identity():
    for twin, base in (("apt36k", "ap10k"), ("ochuman", "coco")):
        a, b = get(twin), get(base)
        assert a.name == twin and a is not b
        assert (a.keypoints, a.flip_pairs, a.sigmas, a.links) == (b.keypoints, b.flip_pairs, b.sigmas, b.links)


def test_wholebody_parts_and_links():
    wb = get("wholebody")
    assert dict(wb.parts) == {
        "body": (0, 17), "foot": (17, 23), "face": (23, 91), "left_hand": (91, 112), "right_hand": (112, 133),
    }  # fmt: skip
    assert wb.part_slice("left_hand") == slice(91, 112)
    with pytest.raises(KeyError, match="left_hand"):
        get("coco").part_slice("left_hand")
    with pytest.raises(TypeError):
        wb.parts["body"] = (0, 1)
    links = set(wb.links)
    assert {(15, 17), (15, 18), (15, 19), (16, 20), (16, 21), (16, 22)} <= links
    assert {(91, 92), (92, 93), (93, 94), (94, 95), (91, 96), (91, 108), (110, 111)} <= links
    assert {(112, 113), (112, 129), (131, 132)} <= links
    assert len(wb.links) == 19 + 6 + 2 * 20
    assert wb.lower_body == (11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22)


def test_interhand_order():
    s = get("interhand2.6m")
    assert s.keypoints[0] == "thumb4" and s.keypoints[3] == "thumb1" and s.keypoints[20] == "wrist"
    assert s.keypoints[16] == "pinky_finger4"
    assert s.flip_pairs == () and s.sigmas is None
    assert s.upper_body == () and s.lower_body == ()
    assert (20, 3) in s.links and (17, 16) in s.links and len(s.links) == 20


def test_upper_body_sets():
    assert get("coco").upper_body == tuple(range(11))
    assert set(get("mpii").upper_body) == set(range(7, 16))
    assert set(get("3dpw").upper_body) == {3, 6, 9, *range(12, 24)}
    assert set(get("ap10k").upper_body) == {0, 1, 2, 3, 5, 6, 7, 8, 9}
    assert set(get("aic").upper_body) == set(get("crowdpose").upper_body) == {0, 1, 2, 3, 4, 5, 12, 13}


def test_side_from_names():
    coco = get("coco")
    assert [coco.side(i) for i in (0, 1, 2)] == ["center", "left", "right"]
    assert {get("interhand").side(i) for i in range(21)} == {"center"}


def test_unknown_skeleton_lists_known_names():
    with pytest.raises(KeyError) as e:
        get("h36m")
    assert "h36m" in str(e.value) and "coco_wholebody" in str(e.value) and "interhand" in str(e.value)


@pytest.mark.parametrize(
    "change",
    [
        {"flip_pairs": ((1, 2), (2, 3))},
        {"flip_pairs": ((1, 1),)},
        {"links": ((0, 17),)},
        {"sigmas": (0.1,) * 16},
        {"joint_weights": (1.0,) * 18},
        {"keypoints": ("nose",) * 17},
        {"upper_body": (17,)},
    ],
)
def test_check_rejects_bad_skeletons(change):
    bad = replace(get("coco"), name="bad", **change)
    with pytest.raises(ValueError, match="bad"):
        skeletons._check(bad)
    assert "bad" not in skeletons.SKELETONS


def test_register_rejects_before_adding():
    bad = Skeleton("bad2", ("a", "b"), (), None, ((0, 2),), (), ())
    with pytest.raises(ValueError):
        skeletons.register(bad)
    assert "bad2" not in skeletons.SKELETONS


# -- the names and 1-based skeletons the real release files carry -------------------------------


def _category(path):
    return json.loads(path.read_text())["categories"][0]


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("coco", ("coco", "test_coco.json")),
        ("ochuman", ("ochuman", "test_ochuman.json")),
        ("ap10k", ("ap10k", "test_ap10k.json")),
        ("crowdpose", ("crowdpose", "test_crowdpose.json")),
        ("aic", ("aic", "test_aic.json")),
    ],
)
def test_names_match_release_files(samples, name, parts):
    cat = _category(sample(samples, *parts))
    assert [n.lower().replace(" ", "_") for n in cat["keypoints"]] == list(get(name).keypoints)


@pytest.mark.parametrize(
    ("name", "parts"),
    [("coco", ("coco", "test_coco.json")), ("ap10k", ("ap10k", "test_ap10k.json")), ("aic", ("aic", "test_aic.json"))],
)
def test_links_match_release_skeleton(samples, name, parts):
    cat = _category(sample(samples, *parts))
    assert [(a - 1, b - 1) for a, b in cat["skeleton"]] == list(get(name).links)
