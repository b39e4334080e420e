"""A rollout GIF of the shipped bundle: real onnxruntime, gate, safety layer and MuJoCo offscreen rendering."""
from __future__ import annotations

from PIL import Image

from spaars_robot.report.render import FRAME_PX, from_bundle, render_rollout
from tests.conftest import REPO


def test_shipped_bundle_renders_a_labelled_gif(tmp_path):
    policy = from_bundle(REPO / "policies" / "hopper-default")
    assert policy.task == "hopper" and "safety/hopper.yaml" in policy.source
    rollout = render_rollout(policy, tmp_path / "hopper.gif", steps=15, every=5)
    assert rollout.steps == 15 and sum(rollout.sources.values()) == 15 and not rollout.terminated
    gif = Image.open(rollout.path)
    assert gif.format == "GIF" and gif.n_frames == 3 and gif.size == (FRAME_PX, FRAME_PX)
    gif.seek(2)
    frame = gif.convert("RGB")
    colours = frame.getcolors(maxcolors=FRAME_PX * FRAME_PX)
    assert len(colours) > 20  # a rendered scene, not a blank frame
    assert gif.info["duration"] == 40  # 5 control steps at hopper's 125 Hz: real time
