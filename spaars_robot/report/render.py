"""A short GIF of a final policy driving its MuJoCo task, rendered offscreen (`MUJOCO_GL=egl`).

The policy acts as `serve` would run it: the bundle's ONNX graph (or, for a run directory, the same PolicyStack
export builds from its checkpoint), the advantage gate and support monitor with their hysteresis
(`runtime/decision.DecisionState`), and the safety spec (`safety/limits.SafetyLayer`). Each frame is labelled
with the step and which policy acted (raw / latent / fallback), the thing the paper's figures are about.
Pillow writes the GIF (a matplotlib dependency, pinned in pyproject.toml): no video codec is needed.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spaars_robot.config.tasks import load_task
from spaars_robot.envs.make import make_env
from spaars_robot.errors import SpaarsError
from spaars_robot.runtime.decision import DecisionState
from spaars_robot.safety.limits import SafetyLayer
from spaars_robot.safety.spec import load_safety_spec

# obs -> (raw_action, latent_action, gate_advantage, support_score), the bundle graph's four outputs
PolicyOutputs = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, float, float]]
FRAME_PX = 240
SOURCE_COLOURS = {"raw": (214, 39, 40), "latent": (31, 119, 180), "fallback": (255, 127, 14), "hold": (127, 127, 127)}


@dataclass
class DeployedPolicy:
    """What acts in the rollout, with the decision state and safety layer serve would put around it."""

    task: str
    outputs: PolicyOutputs
    decisions: DecisionState
    safety: SafetyLayer | None
    source: str  # where the policy came from, for the report's caption


@dataclass
class Rollout:
    """What the rendered episode did: it is printed under the GIF so the picture is not the only evidence."""

    path: Path
    policy: str
    steps: int
    episode_return: float  # over the rendered steps only: not an episode score when `steps` cut it short
    terminated: bool
    sources: Counter = field(default_factory=Counter)


def from_bundle(path: Path) -> DeployedPolicy:
    """An exported bundle, under the safety spec it records (as `serve` with no --safety-spec would run it)."""
    from spaars_robot.export.bundle import load_bundle
    from spaars_robot.export.safety_binding import bind_spec
    from spaars_robot.runtime.inference import PolicyRunner

    bundle = load_bundle(path)
    m = bundle.manifest
    bound = bind_spec(m, None, allow_spec_change=True)  # a picture, not a robot: a changed spec is noted, not refused
    note = "" if bound.override is None else f"; safety spec changed since export ({bound.override})"
    runner, decisions = PolicyRunner(bundle, warmup=0), DecisionState.for_bundle(m)
    return DeployedPolicy(m.task, lambda obs: runner(obs, decisions.skill), decisions,
                          SafetyLayer(bound.spec, m.action.dim, m.observation.dim),
                          f"bundle {path} under safety/{bound.path.name}{note}")


def from_checkpoint(run_dir: Path) -> DeployedPolicy:
    """A run's last checkpoint, with the thresholds export would write and the safety spec it trained under."""
    from spaars_robot.export.from_run import load_run_for_export
    from spaars_robot.export.skill_clock import SkillClock
    from spaars_robot.export.stack import stack_outputs

    stack, info = load_run_for_export(run_dir)
    spec_file = info.config.get("safety_spec")
    safety = None if spec_file is None else SafetyLayer(load_safety_spec(spec_file), info.action_dim, info.obs_dim)
    clock = None if info.skill_horizon is None else SkillClock(stack.skill_dim, info.skill_horizon)
    decisions = DecisionState(info.gate_threshold, info.gate_hysteresis, info.support_threshold,
                              0.1 * abs(info.support_threshold),  # export's default support hysteresis
                              controller=info.controller, skill=clock, gate_hold_steps=info.gate_hold_steps)
    where = "no safety layer (trained without one)" if spec_file is None else f"safety {Path(spec_file).name}"
    return DeployedPolicy(info.task, lambda obs: stack_outputs(stack, obs, clock), decisions, safety,
                          f"checkpoint {run_dir}/checkpoint.pt, {where}")


class Camera:
    """Offscreen frames that follow the robot's torso.

    gymnasium's -v5 renderer names `trackbodyid` in its camera config but renders offscreen through a free
    camera, so a hopper walks out of the picture after a second; MuJoCo's own tracking camera follows it.
    dm-control tasks render through their own tracking camera 0 (`envs/dmc.py`).
    """

    def __init__(self, env) -> None:
        import mujoco

        self.env = env.unwrapped
        self.renderer = None
        if hasattr(self.env, "model") and hasattr(self.env, "data"):  # a gymnasium MuJoCo env
            config = getattr(getattr(self.env, "mujoco_renderer", None), "default_cam_config", None) or {}
            try:
                self.renderer = mujoco.Renderer(self.env.model, FRAME_PX, FRAME_PX)
            except Exception as exc:  # no GL context: mujoco raises several types, all meaning the same here
                raise SpaarsError(f"offscreen rendering is not available ({exc.__class__.__name__}: {exc}); "
                                  "MUJOCO_GL=egl needs EGL, or pass --no-render") from exc
            self.camera = mujoco.MjvCamera()
            self.camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
            self.camera.trackbodyid = 1  # the root body (torso) of every MuJoCo locomotion task
            self.camera.distance = float(config.get("distance", 1.5 * self.env.model.stat.extent))
            self.camera.elevation = float(config.get("elevation", -20.0))
            self.camera.azimuth = 90.0  # side view: the robot moves left to right

    def frame(self) -> np.ndarray:
        if self.renderer is None:
            return self.env.render()
        self.renderer.update_scene(self.env.data, camera=self.camera)
        return self.renderer.render()

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()


def _label(frame: np.ndarray, step: int, source: str):
    """The frame, downscaled to FRAME_PX, with the step and the acting policy written on a coloured strip."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(frame).convert("RGB")
    image = image.resize((FRAME_PX, round(FRAME_PX * image.height / image.width)), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, image.width, 14), fill=SOURCE_COLOURS.get(source, (0, 0, 0)))
    draw.text((4, 2), f"step {step:4d}  {source}", fill=(255, 255, 255))
    return image


def render_rollout(policy: DeployedPolicy, out: Path, steps: int = 375, every: int = 5, seed: int = 100) -> Rollout:
    """Run one episode (at most `steps` control steps) and write every `every`-th frame as a looping GIF
    played at the task's real control rate. Seed 100: not one of training's evaluation seeds."""
    task = load_task(policy.task)
    env = make_env(task, render_mode=None if task.backend == "gymnasium" else "rgb_array")
    camera = Camera(env)
    try:
        obs, _ = env.reset(seed=seed)
        policy.decisions.reset()
        safety_state = policy.safety.new_state() if policy.safety is not None else None
        frames, sources, total, terminated, step = [], Counter(), 0.0, False, 0
        for step in range(1, steps + 1):
            raw, latent, advantage, score = policy.outputs(np.asarray(obs, dtype=np.float32))
            decision = policy.decisions.decide(advantage, score)
            action = raw if decision.source == "raw" else latent
            if policy.safety is not None:
                action = policy.safety.apply(action, safety_state, obs).action
            obs, reward, terminated, truncated, _ = env.step(np.asarray(action, dtype=np.float64))
            total += float(reward)
            sources[decision.source] += 1
            if step % every == 1 or terminated or truncated:
                frames.append(_label(camera.frame(), step, decision.source))
            if terminated or truncated:
                break
    finally:
        camera.close()
        env.close()
    if not frames:
        raise SpaarsError(f"{policy.source}: the rollout rendered no frame")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame_ms = round(1000 * every / task.control_rate_hz)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0, optimize=True)
    return Rollout(out, policy.source, step, total, bool(terminated), sources)
