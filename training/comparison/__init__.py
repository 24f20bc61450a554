"""`switchboard bench`: the tuned model, classical baselines and few-shot LLMs side by side.

>>> from training.comparison import BenchConfig, run_bench
>>> report = run_bench(BenchConfig(dataset="data/sample", output=Path("runs/bench-sample"),
...                                model_dir=Path("runs/sample")))
"""

from training.comparison.run import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench"]
