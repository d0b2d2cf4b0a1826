"""toyworld: the embedded synthetic task world with gold judges.

Every stage of the pipeline is measured against ground truth here, not only
against the learned reward models. The world has:

- benign task families with checkable answers (capitals, arithmetic, "list
  exactly N", translations, opposites, format constraints)      -> `tasks`
- harmful requests (refuse) and borderline ones (help)           -> `tasks`, `tables`
- gold judges `helpfulness`, `safety`, `combined`, `is_refusal`  -> `judges`
- candidate responses of varied quality and simulated annotators -> `candidates`, `annotators`
- dataset builders (prompts, SFT, preferences, dialogues)        -> `world`
- Ghost Attention instructions with checkers                     -> `gatt_instructions`
- JSONL export (`python -m toyworld export --out DIR`)           -> `export`

Pure Python, no torch, deterministic for a seed; train and held-out splits are
disjoint by item, harmful requests also by frame, and preference pairs by response
text. Harmful "compliance" in the world is content-free.
"""
