"""`online.update_precision: bf16`: hidden layers of the online updates in bf16, every value head in fp32 (issue 16)."""
from __future__ import annotations

import csv
import math

import pytest
import torch

from spaars_robot.nn.critics import QEnsemble, ValueNet
from spaars_robot.nn.mlp import EnsembleLinear
from tests.conftest import run_cli


def _dtypes(module: torch.nn.Module, kind: type) -> tuple[list[torch.dtype], list]:
    seen: list[torch.dtype] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
             for m in module.modules() if isinstance(m, kind)]
    return seen, hooks


@pytest.mark.parametrize("make", [lambda: QEnsemble(6, 2, (64, 64), 10, layer_norm=True),
                                  lambda: ValueNet(6, (64, 64))], ids=["q-ensemble", "value"])
def test_under_autocast_the_hidden_layers_run_bf16_and_the_head_fp32(make):
    torch.manual_seed(0)
    net = make()
    head = list(net.modules())[-1]
    with torch.no_grad():
        head.bias.fill_(300.0)  # |Q| of a few hundred, as the IQL-scaled critics have; bf16's spacing there is 2
    obs, act = torch.randn(256, 6), torch.rand(256, 2) * 2 - 1
    call = (lambda: net(obs, act)) if isinstance(net, QEnsemble) else (lambda: net(obs))
    reference = call()
    kind = EnsembleLinear if isinstance(net, QEnsemble) else torch.nn.Linear
    seen, hooks = _dtypes(net, kind)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = call()
    for h in hooks:
        h.remove()
    assert seen[:-1] and set(seen[:-1]) == {torch.bfloat16} and seen[-1] == torch.float32
    assert out.dtype == torch.float32
    # the differences between states survive: a bf16 head would put ~all of them on a grid of spacing 2
    assert len(torch.unique(out)) > 0.9 * out.numel()
    assert len(torch.unique(reference.bfloat16())) <= 10
    assert (out - reference).abs().max() < 0.5  # only the hidden layers' rounding is left
    without = call()  # and outside an autocast nothing changed: the fp32 path is the plain network
    assert torch.equal(without, reference)


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("algo", ["spaars", "sac"])
def test_a_bf16_update_run_trains_end_to_end_and_differs_from_fp32(algo, tiny_hopper_dataset, tmp_path):
    env = {"SPAARS_CACHE": str(tmp_path / "cache")}
    dirs = {}
    for precision in ("fp32", "bf16"):
        runs = tmp_path / precision
        run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--algo", algo, "--protocol",
                "smoke", "--safety-spec", "none", "--runs-root", str(runs), "--results-dir", str(tmp_path / "res"),
                *(["--set", "online.update_precision=bf16"] if precision == "bf16" else []), env=env)
        (dirs[precision],) = [p.parent for p in runs.glob("*/seed0/metrics.csv")]
    assert "set-" in dirs["bf16"].parent.name and "set-" not in dirs["fp32"].parent.name  # the run says so
    assert "update_precision: bf16" in (dirs["bf16"] / "config.yaml").read_text()
    rows = {p: _rows(d) for p, d in dirs.items()}
    assert [r["step"] for r in rows["bf16"]] == [r["step"] for r in rows["fp32"]]
    assert all(math.isfinite(float(r["normalized_mean"])) for r in rows["bf16"])
    # same seeds, same pretraining (one cache entry: pretraining is not affected): only the updates differ
    assert rows["bf16"][0]["normalized_mean"] == rows["fp32"][0]["normalized_mean"]
    assert [r["normalized_mean"] for r in rows["bf16"][1:]] != [r["normalized_mean"] for r in rows["fp32"][1:]]
