"""A run whose --set changes a hyperparameter gets its own run directory and summary file name."""
from __future__ import annotations

from spaars_robot.config.training import hyperparameter_tag, resolve_config
from spaars_robot.train.summaries import run_name, summary_name

FIELDS = {"task": "hopper", "dataset": "hopper-medium", "algo": "spaars", "seed": 0}


def test_changed_hyperparameters_are_tagged_and_protocol_values_are_not():
    base = resolve_config("smoke", FIELDS)
    assert hyperparameter_tag(base, base) == ""
    same = resolve_config("smoke", FIELDS, [f"online.gate.kappa={base.online.gate.kappa}"])
    assert hyperparameter_tag(same, base) == ""  # setting the protocol's own value changes nothing
    tag = hyperparameter_tag(resolve_config("smoke", FIELDS, ["online.gate.kappa=2"]), base)
    assert tag.startswith("set-") and len(tag) == 12
    assert tag == hyperparameter_tag(resolve_config("smoke", FIELDS, ["online.gate.kappa=2.0"]), base)
    assert tag != hyperparameter_tag(resolve_config("smoke", FIELDS, ["online.gate.kappa=3"]), base)


def test_tagged_runs_never_share_a_directory_or_summary_with_the_protocol_run():
    summary = {"task": "hopper", "algo": "spaars", "seed": 0, "protocol": "short",
               "variant": {"concurrent_bc": True, "hard_switch": False}}
    tagged = {**summary, "tag": "set-0123abcd"}
    assert summary_name(summary) == "hopper_spaars_short_seed0.json"
    assert summary_name(tagged) == "hopper_spaars-set-0123abcd_short_seed0.json"
    assert run_name("hopper", "spaars", "short", True, False) == "hopper-spaars-short"
    assert run_name("hopper", "spaars", "short", True, False, "set-0123abcd") == "hopper-spaars-set-0123abcd-short"


def test_every_variant_gets_its_own_directory_and_summary():
    """bf16 and the two ablations change what a run learns: none may share a name with another variant."""
    import itertools

    runs, summaries = set(), set()
    combos = list(itertools.product([True, False], [True, False], [True, False], ["", "set-0123abcd"]))
    for concurrent_bc, hard_switch, bf16, tag in combos:
        runs.add(run_name("hopper", "spaars", "short", concurrent_bc, hard_switch, tag, bf16))
        summaries.add(summary_name({"task": "hopper", "algo": "spaars", "seed": 0, "protocol": "short", "bf16": bf16,
                                    "tag": tag, "variant": {"concurrent_bc": concurrent_bc,
                                                            "hard_switch": hard_switch}}))
    assert len(runs) == len(summaries) == len(combos)
    assert run_name("hopper", "spaars", "short", True, False, "", True) == "hopper-spaars-bf16-short"


def test_a_tagged_config_records_exactly_the_hyperparameters_it_changed():
    """A committed summary must say what `set-<hash>` stands for; the hash alone cannot be read back."""
    from spaars_robot.config.training import hyperparameter_changes

    base = resolve_config("smoke", FIELDS)
    assert hyperparameter_changes(base, base) == {}
    changed = resolve_config("smoke", FIELDS, ["online.gate.tau_rel=0.05", "pretrain.cvae_kl_weight=0.5"])
    assert hyperparameter_changes(changed, base) == {"online.gate.tau_rel": 0.05, "pretrain.cvae_kl_weight": 0.5}
    # task, seed and the like are not hyperparameters: they are in the run name already
    other_seed = resolve_config("smoke", {**FIELDS, "seed": 3})
    assert hyperparameter_changes(other_seed, base) == {}


def test_runs_on_two_datasets_of_a_task_never_share_a_directory_or_summary(tmp_path):
    """hopper-medium and hopper-medium-replay runs of one algorithm used to write into one run directory."""
    from spaars_robot.train.jobs import plan_new

    summary = {"task": "hopper", "algo": "spar", "seed": 0, "protocol": "offline",
               "variant": {"concurrent_bc": True, "hard_switch": False}}
    medium = {**summary, "dataset": "datasets/spaars/hopper-medium-v0"}
    replay = {**summary, "dataset": "datasets/spaars/hopper-medium-replay-v0"}
    d4rl = {**summary, "dataset": "/data/hopper-medium-replay-v2.hdf5"}
    assert summary_name(medium) == "hopper_spar_offline_seed0.json"  # the names committed before stay
    assert summary_name(replay) == summary_name(d4rl) == "hopper_spar-on-medium-replay_offline_seed0.json"
    dirs = {plan_new("hopper", name, None, "spar", [0], "smoke", [], [], tmp_path, None, tmp_path / "cache", False,
                     "none")[0].run_dir.parent.name for name in ("hopper-medium", "hopper-medium-replay")}
    assert dirs == {"hopper-spar-smoke", "hopper-spar-on-medium-replay-smoke"}


def test_a_skill_run_with_changed_supe_settings_gets_its_own_name():
    """`--set supe.init_temperature=1.0` (SUPE's kitchen value) used to write the protocol run's directory and summary
    name, so a grid could count a differently-configured run as done; the locomotion tags keep their hashes."""
    from spaars_robot.config.training import hyperparameter_changes

    fields = {"task": "kitchen", "dataset": "kitchen-mixed", "algo": "supe", "seed": 0}
    base = resolve_config("supe-short", fields)
    hot = resolve_config("supe-short", fields, ["supe.init_temperature=1.0"])
    assert hyperparameter_tag(base, base) == ""
    tag = hyperparameter_tag(hot, base)
    assert tag.startswith("set-") and hyperparameter_changes(hot, base) == {"supe.init_temperature": 1.0}
    other = resolve_config("supe-short", {**fields, "algo": "spaars-supe"}, ["supe.init_temperature=1.0"])
    assert hyperparameter_tag(other, resolve_config("supe-short", {**fields, "algo": "spaars-supe"})) == tag
    # a locomotion run's tag does not read the supe section: its committed hash is unchanged by this fix
    loco = resolve_config("smoke", FIELDS, ["online.gate.kappa=2"])
    assert hyperparameter_tag(loco, resolve_config("smoke", FIELDS)) == hyperparameter_tag(
        loco.model_copy(update={"supe": hot.supe}), resolve_config("smoke", FIELDS))
