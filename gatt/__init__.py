"""Stage 4: Ghost Attention (GAtt), Llama 2 section 3.3.

Hand-written: no public framework (TRL, OpenRLHF, NeMo-Aligner, torchtune) ships
Ghost Attention, so the synthesis, the learn-last-turn data and the per-turn
adherence evaluation live here, following the paper and DESIGN section 9.

    gatt.instructions   the instruction library with checkers (from toyworld)
    gatt.dialogues      dialogues as user turns; placing an instruction in them
    gatt.synthesize     best-of-K multi-turn sampling -> learn-last SFT data
    gatt.evaluate       adherence per turn, before and after (Table 30 layout)
    gatt.train          the stage: synthesize, fine-tune with sft.train, evaluate
"""
