"""Pretraining's cache key depends only on pretraining: online tuning reuses the cache, and entries made before
the config moved (issue 15) keep their keys, so they are reused rather than recomputed or misread."""
from __future__ import annotations

from types import SimpleNamespace

from spaars_robot.config.training import resolve_config
from spaars_robot.train.pretrain import cache_key

FIELDS = {"task": "hopper", "dataset": "x", "algo": "spaars", "seed": 0}
# a dataset is identified by its recorded checksum; this stands for one (the key never opens the data)
DATASET = SimpleNamespace(metadata={"spaars_checksums": {"main_data.hdf5": "c50dfa30" + "0" * 56}})


def test_keys_are_those_the_code_before_the_restructuring_computed():
    # computed with train/config.py + train/pretrain.py at a552a88 for the same dataset checksum and seeds
    expected = {("short", 0): "7209f542bb094bbda327", ("short", 3): "0e6a8925a44aae137936",
                ("smoke", 0): "01693bf8f810f5b8f501", ("smoke", 3): "b175935d832dbd0cb6f3"}
    for (protocol, seed), key in expected.items():
        assert cache_key(DATASET, seed, resolve_config(protocol, FIELDS).pretrain) == key


def test_online_hyperparameters_do_not_change_the_key_and_pretraining_ones_do():
    base = cache_key(DATASET, 0, resolve_config("short", FIELDS).pretrain)
    for online in ("online.tau=0.02", "online.gamma=0.98", "online.hidden=[64,64]", "online.expectile=0.9"):
        assert cache_key(DATASET, 0, resolve_config("short", FIELDS, [online]).pretrain) == base, online
    for offline in ("pretrain.tau=0.02", "pretrain.gamma=0.98", "pretrain.hidden=[64,64]"):
        assert cache_key(DATASET, 0, resolve_config("short", FIELDS, [offline]).pretrain) != base, offline


def test_a_field_added_later_keeps_old_keys_at_its_neutral_value_and_changes_them_otherwise():
    base = cache_key(DATASET, 0, resolve_config("short", FIELDS).pretrain)
    assert cache_key(DATASET, 0, resolve_config("short", FIELDS, ["pretrain.target_subset=null"]).pretrain) == base
    assert cache_key(DATASET, 0, resolve_config("short", FIELDS, ["pretrain.target_subset=2"]).pretrain) != base
