"""How much a safety spec changes the actions of the data a policy learns from (`train --safety-spec`).

A policy trained from a dataset inherits that data's action range: the CVAE decodes actions like the data's, and
the cloned and rectified policies regress onto them. Where the spec's limits bend a large share of the data's
actions, the served policy pays for the disagreement however it is trained (hopper-medium under
`safety/hopper.yaml`: the soft zone bends about half of the data's steps, and a bundle trained under the layer
still lost 26 points to it; BENCHMARKS "What the safety spec costs"). Replaying the data's own action sequences
through the layer a run will train and serve under measures that before any compute, in the run's log and summary,
where the choice between the spec and the data is cheapest to make.
"""
from __future__ import annotations

import numpy as np

from spaars_robot.safety.limits import LIMIT_KINDS, SafetyLayer
from spaars_robot.safety.spec import JointSoftLimits, SafetySpec

MAX_STEPS = 200_000  # whole episodes from the start of the dataset, up to this many steps: a few seconds
SAY_ABOVE = 0.05  # the share of changed steps above which the run's log says the spec and the data disagree


def spec_on_data(spec: SafetySpec, observations: np.ndarray, actions: np.ndarray, episode_start: np.ndarray,
                 episode_length: np.ndarray, max_steps: int = MAX_STEPS) -> dict:
    """Each episode's actions in order through a fresh `SafetyLayer` state (rate limits see the real sequence).

    Returns the steps replayed, the share of them the layer changed (overall and per limit kind, a step counted
    once per kind that acted) and the mean and largest absolute change per action dimension; with joint limits,
    also each joint's share of steps outside its soft limits (`beyond_soft_limits`, one per action dim).
    """
    layer = SafetyLayer(spec, actions.shape[1], observations.shape[1])
    steps = changed = 0
    by_limit = dict.fromkeys(LIMIT_KINDS, 0)
    total_change, largest = 0.0, 0.0
    episodes = 0
    replayed: list[np.ndarray] = []
    for start, length in zip(episode_start, episode_length):
        if steps >= max_steps:
            break
        state = layer.new_state()
        for t in range(int(start), int(start + length)):
            commanded = actions[t].astype(np.float64)
            result = layer.apply(commanded, state, observations[t])
            if result.limits:
                changed += 1
                for kind in set(result.limits):
                    by_limit[kind] += 1
                change = np.abs(result.action - commanded)
                total_change += float(change.sum())
                largest = max(largest, float(change.max()))
        steps += int(length)
        episodes += 1
        replayed.append(np.arange(int(start), int(start + length)))
    steps = max(steps, 1)
    result = {"steps": steps, "episodes": episodes, "changed_share": changed / steps,
              "by_limit": {kind: count / steps for kind, count in by_limit.items() if count},
              "mean_abs_change": total_change / (steps * actions.shape[1]), "max_abs_change": largest}
    joints = spec.action.joint_limits
    if joints is not None and replayed:
        result["beyond_soft_limits"] = _beyond_soft_limits(joints, observations[np.concatenate(replayed)])
    return result


def _beyond_soft_limits(joints: JointSoftLimits, observations: np.ndarray) -> list[float]:
    """Per action dim, the share of the data's steps whose joint sits outside its soft position limits.

    A layer that changes most steps of a dataset may be right (the data's gait leans on its joint stops, as
    hopper's and walker2d's do in MuJoCo, whose joint limits are soft constraints) or mis-specified (a wrong
    observation index); the posture per joint tells which before any training.
    """
    dim = len(joints.position_index)
    positions = observations[:, joints.position_index].astype(np.float64)
    outside = (positions < joints.vector("lower", dim)) | (positions > joints.vector("upper", dim))
    return [float(share) for share in outside.mean(axis=0)]


def describe(result: dict, spec_name: str, dataset_name: str) -> str:
    """One log line; above `SAY_ABOVE` it names the consequence, below it says the two agree."""
    kinds = ", ".join(f"{kind} {100 * share:.1f} %" for kind, share in
                      sorted(result["by_limit"].items(), key=lambda kv: -kv[1]))
    head = (f"safety spec {spec_name} on {dataset_name}'s actions: changes {100 * result['changed_share']:.1f} % of "
            f"{result['steps']} steps ({kinds or 'no limit acted'}; mean |change| {result['mean_abs_change']:.4f})")
    if "beyond_soft_limits" in result:
        head += ("; joints beyond their soft limits on " +
                 " / ".join(f"{100 * share:.1f}" for share in result["beyond_soft_limits"]) + " % of steps")
    if result["changed_share"] <= SAY_ABOVE:
        return head
    return (head + ": the spec and the data disagree; a policy learnt from this data acts where the layer bends it, "
            "so expect it to score lower served under this spec than without it (docs/safety.md, 'Spec and data')")
