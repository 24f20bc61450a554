"""`switchboard bench`: the tuned model, classical baselines and few-shot LLMs side by side.

>>> from training.bench import BenchConfig, run_bench
>>> report = run_bench(BenchConfig(dataset="data/sample", output=Path("runs/bench-sample"),
...                                model_dir=Path("runs/sample")))
"""

from training.bench.run import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench"]
