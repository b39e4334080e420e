"""Offline datasets: Minari-layout storage, D4RL/Minari import, collection, in-memory training view."""
