"""Stage 3a: rejection-sampling fine-tuning with the best answer pooled over all iterations.

    config.py  RSConfig, the one strict config
    core.py    pure functions: select_best, max_median_curve, gold comparison and agreement
    sample.py  the loop: sample K (sharded, resumable) -> score -> pool -> curve -> SFT -> eval
    plot.py    the max/median curve (Figure 7) as PNG
    cli.py     `rlhf rs` / `python -m rejection_sampling`
"""
