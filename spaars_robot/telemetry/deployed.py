"""Deployed experience back into training: a `serve --record` recording -> a dataset `train` reads.

A record holds the observation the server received and the action it sent; a controller speaking
protocol 1.2 adds, with the next observation, the reward of the step into it, whether it ends the
episode, and the action it really applied (its watchdog may have held instead). So transition t of an
episode is (observation of record t, applied action reported by record t+1 (else the action sent for
record t), reward of record t+1, observation of record t+1), and records t and t+1 must be consecutive
observations of one controller session: record t+1's `episode_step` is record t's plus one (an
observation without an outcome is step 0, an episode's first).

Episodes end where a record says terminated or truncated. Where the chain breaks instead (a new session
after a reconnect, a missing step, a non-finite observation, the end of the recording), the last record
before the break has no known successor and its transition is dropped, as D4RL's `qlearning_dataset`
drops a step without a next observation; the transition before it becomes a truncated end.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from spaars_robot.config.tasks import TaskSpec
from spaars_robot.data.episodes import Episode, write_dataset
from spaars_robot.data.files import sha256_file
from spaars_robot.data.importers import import_target
from spaars_robot.errors import DatasetError, SpaarsError
from spaars_robot.telemetry.mcap_log import read_mcap
from spaars_robot.telemetry.record import TelemetryRecord


def _finite(values: list[float]) -> bool:
    return all(math.isfinite(v) for v in values)


def _chains(records: list[TelemetryRecord]) -> list[list[TelemetryRecord]]:
    """Split one session's records (in order) into runs of consecutive observations of one episode."""
    chains: list[list[TelemetryRecord]] = []
    current: list[TelemetryRecord] = []
    for record in records:
        if not _finite(record.observation):
            chains.append(current)
            current = []
            continue  # a broken sensor reading is no state to learn from; the chain breaks around it
        previous = current[-1] if current else None
        linked = (previous is not None and record.episode_step is not None
                  and not (previous.terminated or previous.truncated)
                  and record.episode_step == (previous.episode_step or 0) + 1)
        if not linked:
            chains.append(current)
            current = []
        current.append(record)
    chains.append(current)
    return [chain for chain in chains if len(chain) >= 2]


def _episode(chain: list[TelemetryRecord]) -> Episode:
    """One chain -> one Episode; its end is terminated/truncated as the last record says, else a truncation."""
    follows = chain[1:]
    actions = [nxt.applied_action or cur.action for cur, nxt in zip(chain, follows, strict=False)]
    terminations = np.array([bool(nxt.terminated) for nxt in follows])
    truncations = np.zeros(len(follows), bool)
    truncations[-1] = not terminations[-1]  # a time limit, or a chain cut before the episode really ended
    return Episode(observations=np.array([r.observation for r in chain], np.float32),
                   actions=np.array(actions, np.float32),
                   rewards=np.array([nxt.reward for nxt in follows], np.float32),
                   terminations=terminations, truncations=truncations)


def read_recording(path: Path | str, task: TaskSpec) -> list[Episode]:
    """The deployed episodes of a recording, checked against `task`; any problem is one DatasetError."""
    path = Path(path)
    try:
        records = list(read_mcap(path))
    except SpaarsError as exc:
        raise DatasetError(str(exc)) from exc
    if not records:
        raise DatasetError(f"{path}: the recording holds no telemetry records")
    if not any(r.observation for r in records):
        raise DatasetError(f"{path}: the records carry no observations (recorded by a server before "
                           "spaars-robot's protocol 1.2 recording); nothing to train on")
    if all(r.reward is None for r in records):
        raise DatasetError(f"{path}: no record carries a reward: the controller sent no `outcome` with its "
                           "observations (protocol 1.2, docs/protocol.md), so these are not training transitions")
    for record in records:
        obs_dim, act_dim = len(record.observation), len(record.applied_action or record.action)
        if record.observation and obs_dim != task.obs_dim:
            raise DatasetError(f"{path}: observations have {obs_dim} dims, task {task.name} has "
                               f"{task.obs_dim}; was it recorded on another task?")
        if act_dim != task.action_dim:
            raise DatasetError(f"{path}: actions have {act_dim} dims, task {task.name} has {task.action_dim}")
        if record.reward is not None and not math.isfinite(record.reward):
            raise DatasetError(f"{path}: record {record.sequence} of {record.client} has a non-finite reward")
    sessions: dict[str, list[TelemetryRecord]] = {}
    for record in records:  # read_mcap yields log-time order, so each session's list is in order too
        sessions.setdefault(record.client, []).append(record)
    # a linked record always carries its outcome (episode_step and reward travel together)
    episodes = [_episode(chain) for session in sessions.values() for chain in _chains(session)]
    episodes = [e for e in episodes if np.isfinite(e.actions).all()]  # a NaN action passed by the safety spec
    if not episodes:
        raise DatasetError(f"{path}: no two consecutive observations of one episode with a reward between them")
    return episodes


def default_recording_name(path: Path) -> str:
    """`logs/serve.mcap` -> `serve-deployed` (the suffix keeps it apart from collected datasets)."""
    stem = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-") or "recording"
    return f"{stem}-deployed"


def import_recording(path: Path | str, task: TaskSpec, root: Path | str, name: str | None = None,
                     overwrite: bool = False) -> Path:
    """Write the deployed episodes of recording `path` as dataset `<root>/spaars/<name>-v0`."""
    path = Path(path)
    ds_id, out = import_target(root, name or default_recording_name(path), overwrite)
    episodes = read_recording(path, task)
    extra = {"spaars_task": task.name, "spaars_source": str(path.resolve()), "spaars_source_format": "mcap",
             "spaars_source_sha256": sha256_file(path)}
    return write_dataset(out, episodes, dataset_id=ds_id, obs_dim=task.obs_dim, action_dim=task.action_dim,
                         env_id=task.env_id if task.backend == "gymnasium" else None,
                         ref_min_score=task.ref_min_score, ref_max_score=task.ref_max_score,
                         extra_metadata=extra)
