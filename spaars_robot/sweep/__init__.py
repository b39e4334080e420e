"""`spaars-robot sweep`: a grid of `train` trials from one YAML file, run locally or as Ray Tune trials.

The sweep never trains by itself: every trial is the real `spaars-robot train` command in its own process
(`trials.py` builds its arguments), so a sweep's results are exactly what the same `train` commands typed
by hand give, named the same way. Modules: `spec.py` (the file), `trials.py` (the cross product, what is
done), `process.py` (a trial process that dies with its parent), `local.py` and `ray_backend.py` (the two
backends), `view.py` (the live table read from the trials' run directories).
"""
