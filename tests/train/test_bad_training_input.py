"""Bad input to `train` is a one-line error (exit 2) and destroys nothing: malformed --set, a --set that would
rename a run, a dataset from another task, a damaged run config or checkpoint, and diverging training."""
from __future__ import annotations

import pytest
import torch

from spaars_robot.config.tasks import load_task
from spaars_robot.config.training import PretrainConfig
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.errors import DatasetError, TrainingDiverged
from spaars_robot.train.pretrain import pretrain_cached
from spaars_robot.train.summaries import mean_ci95
from tests.conftest import run_cli


def _train(dataset, tmp_path, *extra):
    return run_cli("train", "--task", "hopper", "--dataset", str(dataset), "--protocol", "smoke",
                   "--runs-root", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"), *extra,
                   env={"SPAARS_CACHE": str(tmp_path / "cache")}, check=False)


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_malformed_set_value_is_a_config_error(tiny_hopper_dataset, tmp_path):
    _one_line_error(_train(tiny_hopper_dataset, tmp_path, "--set", "online.lr=[0.1"), "online.lr", "not valid YAML")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("key", ["seed", "task", "algo", "dataset", "protocol"])
def test_set_cannot_change_what_names_the_run(key, tiny_hopper_dataset, tmp_path):
    """`--set seed=1 --seeds 0` would train seed 1 into seed0/ and overwrite seed 1's committed summary."""
    _one_line_error(_train(tiny_hopper_dataset, tmp_path, "--set", f"{key}=1"), f"--set {key}", "command line")


def test_dataset_of_another_task_is_refused_before_pretraining(tiny_hopper_dataset, tmp_path):
    proc = run_cli("train", "--task", "walker2d", "--dataset", str(tiny_hopper_dataset), "--protocol", "smoke",
                   "--runs-root", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"),
                   env={"SPAARS_CACHE": str(tmp_path / "cache")}, check=False)
    _one_line_error(proc, "does not fit task 'walker2d'", "shapes obs 11 / action 3", "Hopper-v5")
    assert not list((tmp_path / "cache").glob("*.pt")), "pretraining ran on the wrong dataset"


def test_same_shapes_other_environment_is_refused(tiny_hopper_dataset):
    """walker2d and halfcheetah are both 17 x 6: the recorded env id and reference scores tell them apart."""
    dataset = OfflineDataset.load(tiny_hopper_dataset)
    hopper = load_task("hopper")
    dataset.check_fits(hopper)
    with pytest.raises(DatasetError, match="recorded on Hopper-v5, task runs Hopper-v4"):
        dataset.check_fits(hopper.model_copy(update={"env_id": "Hopper-v4"}))
    with pytest.raises(DatasetError, match="ref_max_score"):
        dataset.check_fits(hopper.model_copy(update={"ref_max_score": 4000.0}))


def test_damaged_run_config_and_checkpoint_are_clear_errors_and_left_alone(tiny_hopper_dataset, tmp_path):
    assert _train(tiny_hopper_dataset, tmp_path).returncode == 0
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/seed0/checkpoint.pt")]
    checkpoint = run_dir / "checkpoint.pt"
    damaged = checkpoint.read_bytes()[: checkpoint.stat().st_size // 2]
    checkpoint.write_bytes(damaged)
    proc = run_cli("train", "--resume", str(run_dir), "--results-dir", str(tmp_path / "res"),
                   env={"SPAARS_CACHE": str(tmp_path / "cache")}, check=False)
    _one_line_error(proc, "checkpoint unreadable", "left as it is")
    assert checkpoint.read_bytes() == damaged
    config = run_dir / "config.yaml"
    config.write_text(config.read_text() + "\nonline: [unclosed\n")
    proc = run_cli("train", "--resume", str(run_dir), env={"SPAARS_CACHE": str(tmp_path / "cache")}, check=False)
    _one_line_error(proc, "config.yaml", "not valid YAML")


def _tiny_cfg(**update) -> PretrainConfig:
    return PretrainConfig(steps=60, batch_size=32, hidden=(16, 16), cvae_hidden=(16, 16), support_samples=200,
                          **update)


def test_unreadable_cache_entry_is_recomputed_not_trusted(tiny_hopper_dataset, tmp_path):
    dataset = OfflineDataset.load(tiny_hopper_dataset)
    clean, info = pretrain_cached(dataset, _tiny_cfg(), 5, tmp_path)
    entry = tmp_path / info["cache"].split("/")[-1]
    entry.write_bytes(entry.read_bytes()[:1000])
    messages: list[str] = []
    again, info = pretrain_cached(dataset, _tiny_cfg(), 5, tmp_path, log=messages.append)
    assert not info["cache_hit"] and any("unreadable" in m for m in messages), messages
    assert (tmp_path / (entry.name + ".corrupt")).stat().st_size == 1000
    for name, tensor in clean.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name


def test_diverging_pretraining_raises_and_caches_nothing(tiny_hopper_dataset, tmp_path):
    dataset = OfflineDataset.load(tiny_hopper_dataset)
    with pytest.raises(TrainingDiverged, match="non-finite"):
        pretrain_cached(dataset, _tiny_cfg(lr=1e12, cvae_lr=1e12), 0, tmp_path)
    assert not list(tmp_path.glob("*.pt")), "a diverged pretraining result was cached"


def test_mean_ci95_uses_the_student_t_quantile():
    mean, half = mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-6)
    _, half12 = mean_ci95([float(i % 2) for i in range(12)])  # 11 degrees of freedom: t = 2.201, not 1.96
    assert half12 == pytest.approx(2.200985 * (12 / 11 * 0.25) ** 0.5 / 12 ** 0.5, rel=1e-6)
    assert mean_ci95([4.0])[0] == 4.0 and mean_ci95([4.0])[1] != mean_ci95([4.0])[1]  # nan for one seed
