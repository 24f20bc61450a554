"""`switchboard bench`: tuned models (either objective), classical baselines, few-shot LLMs side by side.

>>> from training.comparison import BenchConfig, run_bench
>>> report = run_bench(BenchConfig(dataset="data/sample", output=Path("runs/bench-sample"),
...                                model_dirs=(Path("runs/sample"),)))
"""

from training.comparison.run import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench"]
