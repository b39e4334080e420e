"""`--precision`: bf16 covers the CVAE only (critics, targets, advantages fp32); `auto` measures and records (issue 16)."""
from __future__ import annotations

import torch
import yaml

from spaars_robot.algos.offline import OfflineNets, offline_losses, plas_latent_loss
from spaars_robot.config.training import PretrainConfig
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.train.precision import MIN_SPEEDUP, choose_precision
from tests.conftest import run_cli


def _batch(obs_dim: int = 11, action_dim: int = 3, n: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"obs": torch.randn(n, obs_dim, generator=g), "action": torch.rand(n, action_dim, generator=g) * 2 - 1,
            "reward": torch.randn(n, generator=g), "next_obs": torch.randn(n, obs_dim, generator=g),
            "done": torch.zeros(n)}


def test_under_bf16_autocast_the_critic_side_stays_fp32():
    torch.manual_seed(0)
    cfg = PretrainConfig(hidden=(32, 32), cvae_hidden=(32, 32))
    nets = OfflineNets(11, 3, cfg)
    critic_target = OfflineNets(11, 3, cfg).critic
    batch, generator = _batch(), torch.Generator().manual_seed(1)
    seen: list[torch.dtype] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
             for m in list(nets.critic.modules()) + list(nets.value.modules()) if isinstance(m, torch.nn.Linear)]
    cvae_dtypes: list[torch.dtype] = []
    hooks += [m.register_forward_hook(lambda _m, _i, out: cvae_dtypes.append(out.dtype))
              for m in nets.cvae.modules() if isinstance(m, torch.nn.Linear)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, metrics = offline_losses(nets, critic_target, batch, cfg, generator)
        latent_loss = plas_latent_loss(nets, batch["obs"])
    for h in hooks:
        h.remove()
    assert seen and set(seen) == {torch.float32}  # every critic and value layer: fp32
    assert torch.bfloat16 in cvae_dtypes  # the CVAE is what bf16 is for
    assert loss.dtype == torch.float32 and latent_loss.dtype == torch.float32
    assert all(v.dtype == torch.float32 for k, v in metrics.items() if k.startswith("iql/"))
    loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in nets.critic.parameters() if p.grad is not None)


def test_auto_measures_both_and_picks_bf16_only_when_clearly_faster(tiny_hopper_dataset):
    dataset = OfflineDataset.load(tiny_hopper_dataset)
    choice = choose_precision("auto", dataset, PretrainConfig(), updates=20)
    record = choice.record()
    assert record["fp32_updates_per_second"] > 0 and record["bf16_updates_per_second"] > 0
    assert choice.bf16 == (record["bf16_speedup"] >= MIN_SPEEDUP)
    assert record["chosen"] == ("bf16" if choice.bf16 else "fp32") and record["requested"] == "auto"
    assert not choose_precision("fp32", dataset, PretrainConfig()).bf16
    assert choose_precision("bf16", dataset, PretrainConfig()).bf16


def test_the_choice_is_recorded_in_the_run_and_a_bad_word_is_refused(tiny_hopper_dataset, tmp_path):
    env = {"SPAARS_CACHE": str(tmp_path / "cache")}
    bad = run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--protocol", "smoke",
                  "--precision", "fp64", "--runs-root", str(tmp_path / "bad"), check=False)
    assert bad.returncode == 2 and "--precision 'fp64'" in bad.stderr and not (tmp_path / "bad").exists()
    proc = run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--protocol", "smoke",
                   "--algo", "iql", "--precision", "auto", "--runs-root", str(tmp_path / "runs"), env=env)
    assert "precision auto ->" in proc.stdout
    (config_file,) = (tmp_path / "runs").glob("*/seed0/config.yaml")
    config = yaml.safe_load(config_file.read_text())
    record = config["precision"]
    assert record["requested"] == "auto" and record["chosen"] in ("fp32", "bf16")
    assert config["bf16"] == (record["chosen"] == "bf16")
    assert ("-bf16-" in str(config_file)) == config["bf16"]  # a bf16 run never shares a name with an fp32 one
