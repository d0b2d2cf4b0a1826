"""Stage 1: supervised fine-tuning with the loss on answer tokens only.

Public API (other stages): `sft.train.run(SFTConfig) -> Path` and
`sft.train.finetune_on(train_jsonl, output_dir, base=..., data__learn="last")`.
"""
