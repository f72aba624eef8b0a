"""The objective registry: a new objective is one ObjectiveSpec, and RunConfig and `distill` follow it."""
import argparse
import dataclasses
from dataclasses import dataclass, fields

import pytest

from engine import objectives
from engine.cli import distill
from engine.objectives import ObjectiveSpec, get_objective, objective_names
from engine.run import RunConfig
from engine.run.config import field_help
from engine.streams import MAX_SEED


@dataclass(frozen=True)
class ToyParams:
    scale: int = 1


class ToyObjective:
    def __init__(self, params: ToyParams, ctx):
        self.params, self.ctx = params, ctx


def build_toy(ctx, ipc, scale: int = 1, **overrides) -> ToyObjective:
    return ToyObjective(ToyParams(scale=scale * ipc), ctx)


TOY = ObjectiveSpec(name="toy", label="TOY: a test objective", params=ToyParams, uses_dsa=False,
                    latent_lr=(0.25, 2.5), pixel_lr=0.75, steps_per_space=7, build=build_toy,
                    options=lambda config: {"scale": config.batch_real})


@pytest.fixture
def toy():
    with objectives.registered(TOY) as spec:
        yield spec
    assert "toy" not in objective_names()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine distill")
    distill.add_arguments(p)
    return p


def test_builtins_in_registration_order():
    assert objective_names() == objectives.OBJECTIVES == ("dm", "dc", "dsa", "tesla", "sre2l")
    assert [objectives.uses_dsa(n) for n in objective_names()] == [True, False, True, True, False]
    assert [get_objective(n).steps_per_space for n in objective_names()] == [20, 100, 100, 100, 100]
    with pytest.raises(ValueError, match=r"^unknown objective 'x'; choose one of: dm, dc, dsa, tesla, sre2l$"):
        get_objective("x")


def test_a_registered_objective_is_a_run_objective(toy):
    assert objective_names()[-1] == "toy" and "toy" in objectives.OBJECTIVES
    config = RunConfig(objective="toy", ipc=2, batch_real=3)
    assert config.steps == 7 and RunConfig(objective="toy", steps_per_space=4).steps == 4
    assert config.learning_rates() == (0.25, 2.5)
    assert config.learning_rates(pixels=True) == (0.25, 0.75)
    assert config.learning_rates({"toy": (1.0, 2.0)}, pixels=True, tuned_pixel={"toy": 0.5}) == (1.0, 1.0)  # x IPC
    objective = objectives.build_for_run(config, ctx="ctx")
    assert isinstance(objective, ToyObjective) and objective.params.scale == 6 and objective.ctx == "ctx"
    assert objectives.build_objective("toy", "ctx", 1).params.scale == 1 and not objectives.uses_dsa("toy")


def test_a_registered_objective_is_in_distill_help(toy):
    text = " ".join(parser().format_help().split())  # argparse wraps lines
    assert "sre2l, toy" in text and "TOY: a test objective" in text and "toy 7" in text
    assert parser().parse_args(["--objective", "toy"]).objective == "toy"


def test_registry_refuses_duplicates_and_bad_specs(toy):
    with pytest.raises(ValueError, match="objective 'toy' is already registered"):
        objectives.register(TOY)
    with pytest.raises(ValueError, match="objective 'dm' is already registered"):
        objectives.register(ObjectiveSpec(**{f.name: getattr(TOY, f.name) for f in fields(TOY)} | {"name": "dm"}))
    with pytest.raises(ValueError, match="lower-case word"):
        ObjectiveSpec(**{f.name: getattr(TOY, f.name) for f in fields(TOY)} | {"name": "Toy 2"})
    assert get_objective("dm").label == "DM: distribution matching"


def test_run_options_of_the_builtins():
    dc = get_objective("dc").options(RunConfig(objective="dc", outer_loop=2))
    assert dc == {"outer_loop": 2, "inner_loop": None} and get_objective("dm").options(RunConfig()) == {}
    tesla = get_objective("tesla").options(RunConfig(objective="tesla", buffers="b", syn_steps=4, max_start_epoch=2))
    assert tesla["buffers"] == "b" and tesla["tesla"] == objectives.TeslaParams(syn_steps=4, max_start_epoch=2)


def test_every_field_has_help_and_a_field_without_it_does_not_crash(monkeypatch):
    assert all(field_help(f) for f in fields(RunConfig))
    assert field_help(dataclasses.field(default=1)) == ""

    @dataclass(frozen=True)
    class Bare:
        ipc: int = 1
        flag: bool = False

    monkeypatch.setattr(distill, "fields", lambda cls: fields(Bare))
    text = parser().format_help()
    assert "--ipc IPC" in text and "--flag" in text


def test_no_distance_and_bool_flags_pass_only_what_was_given(tmp_path):
    out = ["--out", str(tmp_path / "r"), "--device", "cpu"]
    config, _ = distill._config_and_dir(parser().parse_args(out))
    assert config.distance is True and config.accuracy_pick is False
    args = parser().parse_args([*out, "--no-distance", "--selection", "last", "--accuracy-pick"])
    assert args.distance is False and args.accuracy_pick is True
    config, _ = distill._config_and_dir(args)
    assert config.distance is False and config.accuracy_pick is True and config.selection == "last"
    with pytest.raises(SystemExit):  # there is no --distance flag to switch on what is on by default
        parser().parse_args([*out, "--distance"])
    with pytest.raises(ValueError, match="--selection distance needs the class-relevant distance"):
        distill._config_and_dir(parser().parse_args([*out, "--no-distance", "--selection", "distance"]))


@pytest.mark.parametrize("overrides, message", [
    ({"distance": False, "selection": "distance"},
     "^--selection distance needs the class-relevant distance; drop --no-distance or choose --selection loss or last$"),
    ({"distance": False}, "hpd selects by the class-relevant distance.*--selection loss or last"),  # H-PD's default
    ({"seed": -1}, f"^--seed must be between 0 and {MAX_SEED}, got -1$"),
    ({"seed": MAX_SEED + 1}, "--seed must be between 0 and"),
    ({"seed": True}, "--seed must be a whole number, got True"),
    ({"ipc": True}, "^--ipc must be a whole number, got True$"),
    ({"steps_per_space": False}, "--steps-per-space must be a whole number, got False"),
    ({"ipc": 1.5}, "--ipc must be a whole number, got 1.5"),
    ({"lr_w": float("nan")}, "^--lr-w must be a finite number, got nan$"),
    ({"lr_pixel": float("inf")}, "--lr-pixel must be a finite number, got inf"),
    ({"momentum": float("-inf")}, "--momentum must be a finite number"),
    ({"f_clip": float("nan")}, "--f-clip must be a finite number"),
    ({"lr_f": True}, "--lr-f must be a number, got True"),
    ({"distance": "no"}, "--distance must be True or False"),
    ({"objective": "tesla"}, "TESLA needs expert trajectories: pass --buffers DIR"),
])
def test_bad_values_are_refused_with_one_sentence(overrides, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**overrides)


def test_good_edge_values_pass():
    assert RunConfig(seed=MAX_SEED).seed == MAX_SEED
    assert RunConfig(distance=False, selection="loss").distance is False
    assert RunConfig(method="pixel", distance=False).selection_basis == "last"
    assert RunConfig(lr_w=1, momentum=0).lr_w == 1
