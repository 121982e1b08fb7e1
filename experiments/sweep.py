"""Compare methods on the same-class accumulating benchmark.

    python experiments/sweep.py --preset quick
    python experiments/sweep.py --preset full --methods finetune lwf sst

See avalanche_sst.experiments.sweep for what is written where.
"""

from avalanche_sst.experiments.sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
