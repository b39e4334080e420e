"""`spaars-robot report`: finished runs -> the Markdown results tables and the figures users look at.

Inputs are what `train` leaves behind, wherever it is: committed compact summaries
(`benchmarks/results/train/*.json`), run directories (`summary.json`, `metrics.csv`, `checkpoint.pt`), or a sweep's
runs root (its run directories and `summaries/`). Modules: `runs.py` (finding and validating the runs),
`run_metrics.py` (what one run says: whole-run safety, steps to a target, area under the curve),
`aggregate.py` (across seeds and tasks: rliable's interquartile mean, stratified bootstrap, performance
profiles), `tables.py` (the Markdown), `figures.py` (learning curves, gate, profiles), `render.py` (a GIF of a
final policy), `build.py` (all of it into one output directory).
"""
