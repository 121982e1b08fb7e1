"""Validation learning curves of fine-tuning, to choose a preset's epochs (issue 14, part 0).

    python experiments/learning_curves.py --preset full --seeds 0 1 2 --max-epochs 30 --out results/curves
    python experiments/learning_curves.py --preset full --schedule constant --max-epochs 40

Writes curves.csv, curves.png and curves.md (the chosen epochs per step and the
preset fields to set) under --out; rerunning the same command reuses every
finished run. See avalanche_sst.experiments.curves for the schedule and the rule.
"""

from avalanche_sst.experiments.curves import main

if __name__ == "__main__":
    raise SystemExit(main())
