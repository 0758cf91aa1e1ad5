import pytest

from posebh.engine.stages import StageConfigError, StageSpec, apply_trainable

from .toys import make_model

BASE = {"name": "s", "epochs": 60, "batch_size": 8, "optimizer": {"type": "adam", "lr": 5e-4}}


def spec(**over):
    return StageSpec.from_dict({**BASE, **over})


def test_defaults_and_roundtrip():
    s = spec(lr_steps=[35, 55], trainable=["heads"])
    assert s.optimizer.type == "adam" and s.optimizer.betas == (0.9, 0.999)
    assert s.warmup_ratio == 0.001 and s.lr_gamma == 0.1 and s.amp == "bf16" and s.layer_decay is None
    assert StageSpec.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(
    "over, needle",
    [
        ({"epoch": 3}, "unknown key 'epoch'"),
        ({"amp": "fp8"}, "amp"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"optimizer": {"type": "sgd", "lr": 1}}, "optimizer.type"),
        ({"optimizer": {"lr": 1, "momentum": 0.9}}, "unknown key 'momentum'"),
        ({"optimizer": {"type": "adam"}}, "missing required key 'lr'"),
        ({"lr_steps": [55, 35]}, "lr_steps"),
        ({"layer_decay": 1.5}, "layer_decay"),
        ({"events": [{"epoch": 60, "thaw": ["backbone"]}]}, "events[0].epoch"),
        ({"events": [{"epoch": 1}]}, "does nothing"),
        ({"events": [{"epoch": 1, "thaw": ["a"], "freez": ["b"]}]}, "unknown key 'freez'"),
        ({"events": [{"epoch": 1, "prototypes": "learn"}]}, "events[0].prototypes"),
        ({"trainable": "backbone"}, "trainable"),
        ({"max_nonfinite": True}, "max_nonfinite"),
    ],
)
def test_bad_values_name_the_key(over, needle):
    with pytest.raises(StageConfigError) as e:
        spec(**over)
    assert needle in str(e.value) and "'s'" in str(e.value)


def test_missing_required_key():
    with pytest.raises(StageConfigError, match="missing required key 'epochs'"):
        StageSpec.from_dict({"name": "x", "batch_size": 1, "optimizer": {"lr": 1}})


def test_interhand_schedule():
    # reference 5.2: embedding frozen, head trained, backbone from 30, prototypes updated 0-29
    s = spec(trainable=["heads"], events=[{"epoch": 30, "thaw": ["backbone"], "prototypes": "frozen"}])
    assert s.trainable_at(0) == s.trainable_at(29) == {"heads"}
    assert s.trainable_at(30) == s.trainable_at(59) == {"heads", "backbone"}
    assert s.prototypes_at(29) == "update" and s.prototypes_at(30) == "frozen"


def test_3dpw_schedule_thaws_for_one_epoch():
    s = spec(epochs=30, trainable=["heads"],
             events=[{"epoch": 16, "freeze": ["backbone"]}, {"epoch": 15, "thaw": ["backbone"], "prototypes": "frozen"}])
    assert [("backbone" in s.trainable_at(e)) for e in (14, 15, 16, 29)] == [False, True, False, False]
    assert s.change_epochs() == [15, 16]


def test_freezing_a_part_of_a_trainable_module_is_refused():
    with pytest.raises(StageConfigError, match="inside trainable 'backbone'"):
        spec(trainable=["backbone"], events=[{"epoch": 2, "freeze": ["backbone.blocks"]}])
    # freezing a whole prefix drops the sub-prefixes under it
    s = spec(trainable=["backbone.blocks", "heads"], events=[{"epoch": 2, "freeze": ["backbone"]}])
    assert s.trainable_at(2) == {"heads"}


def test_apply_trainable():
    m = make_model()
    n = apply_trainable(m, ["heads", "backbone.blocks.1"])
    names = {k for k, p in m.named_parameters() if p.requires_grad}
    assert n == len(names) and names and all(k.startswith(("heads.", "backbone.blocks.1.")) for k in names)
    with pytest.raises(ValueError, match="'head' matches no parameter"):
        apply_trainable(m, ["head"])  # a typo must not freeze everything silently
