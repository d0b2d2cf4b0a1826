"""Stage 4, Ghost Attention: `run(config)` as a flat loop with numbered steps.

Hand-written, because no public framework ships GAtt (Llama 2, section 3.3):

1. run folder: skip a completed run with the same config and inputs;
2. instructions and dialogues of the `train` split;
3. synthesis with the current model (the instruction, long or short, single or a
   two-kind combination, in every user turn; best of K adhering samples per turn by
   `synthesis.ranking`, unchecked instructions ranked by it alone; the instruction
   kept in turn 1 only; `learn: last`), reused on resume;
4. fine-tune with the SFT stage's own code (`sft.train.run`, `data.learn: last`)
   on the synthesised rows plus `finetune.replay_toyworld` ordinary demonstrations;
5. evaluation on HELD-OUT instructions and dialogues to the last of `eval.turns`:
   the instruction once (before and after GAtt) and in every user turn (the ceiling),
   adherence per turn in the paper's Table 30 layout, `eval.json` and `adherence.png`;
6. manifest: outputs, synthesis counts (dropped dialogues included), the table.

Under a multi-process launch (`accelerate launch -m gatt run ...`, `torchrun -m gatt
run ...`) the stage has the roles of the other stages: only the main process takes
the run folder's lock and writes its config, manifest, metrics and data; the others
wait for it (`wait_for_everyone`) and read. Synthesis splits the dialogues into
shards whose seeds depend on the shard's index only (`synthesis.shard_size`), process
p takes shards p, p + N, ...; the results are gathered (`gather_object`) and written
once, equal to one process's. The fine-tune is the SFT stage under the same launch
(TRL's trainer: DDP, or accelerate's FSDP2 with `distributed: fsdp2`). The evaluation
splits by row (model and condition: before, after, reminded): each row plays every
held-out case in the same batches as one process would, so the table is the same,
and no process waits idle through the whole evaluation (a barrier held that long can
time out under NCCL).
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.config import config_to_dict
from core.device import resolve_device
from core.distributed import accelerate_fsdp_launch, check_trainer_engine, process_state
from core.errors import ConfigError, RLHFError
from core.io import atomic_write_json, write_jsonl
from core.model_paths import check_config_models
from core.models import load_causal_lm, load_tokenizer
from core.run import FollowerRun, StageRun, read_manifest
from core.sources import describe_source, is_toyworld, source_name
from gatt.config import FOLLOW_UPS, GattConfig
from gatt.dialogues import load_dialogues
from gatt.evaluate import (
    EVAL_JSON,
    PLOT,
    condition_rows,
    evaluate_models,
    load_eval_dialogues,
    make_cases,
    play_rows,
    table_markdown,
    write_evaluation,
)
from gatt.instructions import assign_instructions, select_instructions
from gatt.synthesize import Ranker, merge_stats, shard_seed, shards, synthesize

log = logging.getLogger("gatt")

STAGE = "gatt"
DATA = "gatt_data.jsonl"
TRAIN_DATA = "train_data.jsonl"  # the GAtt rows plus the replayed demonstrations
SYNTHESIS = "synthesis.json"


# ---------------------------------------------------------------- helpers
def stage_inputs(config: GattConfig) -> dict:
    inputs = {"model": config.model}
    for name, source in (("dialogues", config.dialogues.source), ("eval_dialogues", config.eval.dialogues_source)):
        if not is_toyworld(source):
            inputs[name] = source_name(source)
    inputs.update(instruction_files(config))
    if uses_reward_models(config):
        inputs["helpfulness_rm"] = config.reward_models.helpfulness
        inputs["safety_rm"] = config.reward_models.safety
    return inputs


def synthesis_key(config: GattConfig, input_hashes: dict[str, dict]) -> dict:
    """What the synthesised data depends on (a resumed run reuses the data when it matches):
    the settings, and the contents of the stage's inputs (`StageRun.input_hashes`: model,
    RMs, dialogue and instruction files). In a pipeline the model and RM paths stay the
    same while their contents change (a retrained version), so paths alone would reuse
    data sampled and ranked by the old ones."""
    full = config_to_dict(config)
    key = {key: full[key] for key in ("model", "dtype", "chat_template", "instructions", "dialogues", "synthesis", "seed")}
    return {**key, "inputs": input_hashes}


def instruction_files(config: GattConfig) -> dict[str, str]:
    """The instruction library files the config names (none for toyworld's library)."""
    ins = config.instructions
    files = {"instructions": ins.source, "heldout_instructions": ins.heldout_source}
    return {name: path for name, path in files.items() if path not in (None, "toyworld")}


def train_instructions(config: GattConfig) -> list:
    """The library's train instructions (toyworld's or the user's file), kinds and combinations applied."""
    ins = config.instructions
    return select_instructions("train", ins.seed, ins.n_combined, ins.kinds, source=ins.source, heldout_source=ins.heldout_source)


def heldout_instructions(config: GattConfig) -> list:
    """The held-out instructions that evaluation deals to held-out dialogues."""
    e, ins = config.eval, config.instructions
    return select_instructions(
        "heldout", e.seed, e.n_combined, config.eval_kinds, source=ins.source, heldout_source=ins.heldout_source,
        key="eval.kinds" if e.kinds is not None else "instructions.kinds",
    )


def load_policy(name: str, config: GattConfig, device: str | None = None):
    tokenizer = load_tokenizer(name, chat_template=config.chat_template)
    model = load_causal_lm(name, dtype=config.dtype, device=device or resolve_device(config.device))
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def synthesize_data(config: GattConfig, model, tokenizer, out_path: Path, state=None) -> dict:
    """Steps 2-3: train-split instructions and dialogues -> learn-last SFT rows at `out_path`.

    The dialogues are cut into shards of `synthesis.shard_size`, each synthesised with
    its own seed (`shard_seed`); under a launch of N processes (`state`, accelerate's
    PartialState) process p synthesises shards p, p + N, ..., every process gets every
    shard's rows and stats (`gather_object`), and the main one writes `out_path`. The
    rows and stats are those of one process. Returns the stats (on every process)."""
    ins = config.instructions
    instructions = train_instructions(config)
    d = config.dialogues
    dialogues, too_short = load_dialogues(d.source, "train", d.n, d.n_turns, d.seed)
    dealt = assign_instructions(instructions, len(dialogues), config.seed)
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    ranker = Ranker(config.synthesis.ranking, config.reward_models, device=process_device(config, state))
    parts = []
    for index, part in enumerate(shards(len(dialogues), config.synthesis.dialogues_per_shard())):
        if index % world == rank:
            records, stats = synthesize(
                model, tokenizer, dialogues[part], dealt[part], config.synthesis, ranker,
                seed=shard_seed(config.seed, index), short_probability=ins.short_probability, progress=config.progress,
            )
            parts.append((index, rank, records, stats))
    if world > 1:
        from accelerate.utils import gather_object

        parts = gather_object(parts)
    parts.sort(key=lambda part: part[0])
    stats = merge_stats([part[3] for part in parts])
    stats_dict = stats.to_dict() | {"dialogues_too_short": too_short, "n_instructions": len(instructions),
                                    "unchecked_instructions": sorted(i.id for i in instructions if not i.checked),
                                    "n_shards": len(parts), "shards_by_process": shards_by_process(parts, world)}
    if rank == 0:
        write_jsonl(out_path, [record for part in parts for record in part[2]])
        log.info("GAtt synthesis: %s", stats.summary())
    return stats_dict


def shards_by_process(parts: list[tuple], world: int) -> list[list[int]]:
    """Which shard indices each process synthesised (the manifest shows the split)."""
    return [[part[0] for part in parts if part[1] == rank] for rank in range(world)]


def process_device(config: GattConfig, state=None) -> str:
    """`config.device`, with each process of a multi-GPU launch on its own GPU."""
    device = resolve_device(config.device)
    if state is not None and state.num_processes > 1 and device.startswith("cuda"):
        device = str(state.device)
    return device


def sft_config(config: GattConfig, data_path: Path, output_dir: Path):
    """The SFT stage's config: learn the last turn only; no toyworld gold eval (GAtt has its own)."""
    from core.config import validate_config
    from sft.config import SFTConfig

    finetune = config_to_dict(config.finetune)
    data = {
        "model": {"name": config.model, "chat_template": config.chat_template},
        "data": {"train": str(data_path), "learn": "last"},
        "training": finetune["training"],
        "lora": finetune["lora"],
        "merge_lora": finetune["merge_lora"],
        "eval": {"enabled": False},
        "output_dir": str(output_dir),
        "report_to": list(config.report_to),
        "progress": config.progress,
    }
    return validate_config(SFTConfig, data, origin="gatt.finetune")


def training_data(config: GattConfig, data_path: Path, out_path: Path) -> tuple[Path, int]:
    """The fine-tuning file: the GAtt rows, plus `finetune.replay_toyworld` toyworld
    demonstrations (written to `out_path`); and the replay count."""
    from sft.data import with_toyworld_replay

    f = config.finetune
    return with_toyworld_replay(data_path, out_path, f.replay_toyworld, config.seed, f.replay_family_weights)


def eval_dialogues(config: GattConfig):
    """The held-out dialogues played to the last of `eval.turns` (shorter ones extended), and how many were extended."""
    e = config.eval
    return load_eval_dialogues(e.dialogues_source, e.n_dialogues, e.n_turns, e.seed, e.extend, FOLLOW_UPS)


def eval_cases(config: GattConfig, dialogues=None):
    """Held-out instructions (same kinds, other values; combinations and short forms
    included) dealt to held-out dialogues."""
    e = config.eval
    instructions = heldout_instructions(config)
    if dialogues is None:
        dialogues, _ = eval_dialogues(config)
    return make_cases(dialogues, instructions, e.seed, e.short_probability)


def eval_extra(config: GattConfig, n_extended: int) -> dict:
    """What eval.json says about how the dialogues were played."""
    e = config.eval
    how = ("their own user turns replayed in order" if e.extend == "cycle" else f"generic follow-ups: {list(FOLLOW_UPS)}")
    return {"dialogues_source": describe_source(e.dialogues_source), "dialogue_extension": {"extend": e.extend, "n_extended": n_extended, "how": how}}


def eval_cases_and_extension(config: GattConfig) -> tuple[list, int]:
    """The held-out cases and how many of their dialogues were extended."""
    dialogues, n_extended = eval_dialogues(config)
    return eval_cases(config, dialogues), n_extended


def run_evaluation(config: GattConfig, after: tuple, before: tuple | None, out: Path, prepared: tuple[list, int] | None = None,
                   state=None) -> dict | None:
    """Step 5 (and `rlhf gatt eval`): the rows of `condition_rows` on the held-out cases.

    Under a launch of N processes (`state`), process p plays rows p, p + N, ... (each row
    whole, in the batches one process would use), the played rows are gathered, and the
    main process writes the report and returns it (the others return None)."""
    e = config.eval
    cases, n_extended = prepared if prepared is not None else eval_cases_and_extension(config)
    rows = condition_rows(after, before, e.reminded)
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    if world == 1:
        return evaluate_models(
            rows, cases, config.eval_position, e.sampling, out,
            progress=config.progress, turns=e.turns, min_reminded_adherence=e.min_reminded_adherence, extra=eval_extra(config, n_extended),
        )
    from accelerate.utils import gather_object

    mine = [row for index, row in enumerate(rows) if index % world == rank]
    played = dict(gather_object(list(play_rows(mine, cases, config.eval_position, e.sampling, config.progress, e.turns).items())))
    if rank != 0:
        return None
    return write_evaluation(rows, played, cases, config.eval_position, out, e.turns, e.min_reminded_adherence, eval_extra(config, n_extended))


def uses_reward_models(config: GattConfig) -> bool:
    """Whether the stage scores with `reward_models` (ranking the samples, or the policy evaluation)."""
    return config.synthesis.ranking.by == "reward_model" or (config.eval.policy.enabled and config.reward_models.configured)


def check_models(config: GattConfig) -> None:
    """`model` is a causal LM and, when the stage scores with them, both `reward_models`
    one-output reward models, with complete weight files; a bad one is one line naming
    the key and the path. Loads nothing."""
    check_config_models([("model", config.model, "policy")])
    if uses_reward_models(config):
        from reward.gated import check_reward_models

        check_reward_models(config.reward_models)


def check_inputs(config: GattConfig) -> None:
    """Fail before the run folder is touched when an input is bad: the models (`check_models`),
    the model's tokenizer and chat template, the dialogue files (every record is checked)."""
    check_models(config)
    load_tokenizer(config.model, chat_template=config.chat_template)
    d, e = config.dialogues, config.eval
    instructions = train_instructions(config)
    if config.synthesis.repair == "apply":
        from gatt.instructions import repairable

        fixed = [ins.id for ins in instructions if not repairable(ins)]
        if fixed:
            raise ConfigError(f"synthesis.repair=apply: no rewrite for instructions {fixed[:5]} (regex, language and callable checks need a \"repair\" in the library line)")
    if e.enabled:
        heldout_instructions(config)
    load_dialogues(d.source, "train", d.n, d.n_turns, d.seed)
    if e.enabled:
        eval_dialogues(config)


# ---------------------------------------------------------------- the stage
def run(config: GattConfig) -> Path:
    """Run the GAtt stage; returns the fine-tuned model folder (`OUT/sft/model`).
    Every process of a launch calls it (the roles are in the module docstring)."""
    import torch

    from sft.train import run as sft_run

    # A PartialState, not an Accelerator: the fine-tune's TRL trainer makes the Accelerator,
    # and one made here first would fix its mixed precision (bf16 training) to "no".
    state = process_state()
    main = state.is_main_process
    check_trainer_engine(config.distributed, state.num_processes, torch.cuda.is_available(), accelerate_fsdp_launch(),
                         "GAtt's fine-tune", "-m gatt run")
    out = Path(config.output_dir)
    model_dir = out / "sft" / "model"

    # 1. Run folder: skip a finished run with the same config and inputs.
    stage = StageRun(out, STAGE, config, inputs=stage_inputs(config), report_to=config.report_to,
                     push_to_hub=config.push_to_hub)
    if stage.is_complete():
        log.info("GAtt: %s is complete with the same config and inputs; skipping", out)
        return model_dir
    check_inputs(config)
    state.wait_for_everyone()  # every process has read the old manifest before the main one rewrites it
    # Only the main process takes the lock and writes the run folder; the others follow.
    with stage if main else FollowerRun() as run_:
        if main:
            run_.metrics.truncate_after(-1)  # every row is logged again below (a killed run's rows would repeat)
            run_.extra["processes"] = {"num_processes": state.num_processes, "distributed": config.distributed}
        state.wait_for_everyone()  # the main process has hashed the inputs into the manifest
        input_hashes = run_.input_hashes if main else read_manifest(out)["inputs"]
        device = process_device(config, state)
        model, tokenizer = load_policy(config.model, config, device)

        # 2-3. Instructions, dialogues and synthesis (reused if a stopped run already made them).
        data_path, synthesis_path = out / DATA, out / SYNTHESIS
        previous = read_json(synthesis_path)
        key = synthesis_key(config, input_hashes)
        if previous and previous.get("key") == key and data_path.is_file():
            stats = previous["stats"]
            log.info("GAtt: reusing the synthesised data in %s", data_path)
        else:
            stats = synthesize_data(config, model, tokenizer, data_path, state)  # every process its shards; main writes
            if main:
                atomic_write_json(synthesis_path, {"key": key, "stats": stats})
        state.wait_for_everyone()  # the data is on disk
        if main:
            run_.add_output("data", data_path)
            run_.extra["synthesis"] = stats
            run_.metrics.log(0, **{f"synthesis/{k}": v for k, v in stats.items() if isinstance(v, (int, float))})
        if stats["n_examples"] == 0:  # the same stats on every process: all of them stop here
            raise RLHFError(f"GAtt synthesis kept no dialogue ({stats['n_dropped']} dropped): raise synthesis.k or use a model that follows the instructions when they are repeated")

        # 4. Fine-tune with the SFT stage's code, learning the last assistant turn only
        #    (every process takes part: the SFT stage has the same roles).
        if main:
            train_path, n_replay = training_data(config, data_path, out / TRAIN_DATA)
            run_.extra["replayed_demonstrations"] = n_replay
        state.wait_for_everyone()  # the training file is on disk
        if not main:
            train_path = out / TRAIN_DATA if config.finetune.replay_toyworld else data_path
        trained_dir = sft_run(sft_config(config, train_path, out / "sft"))
        run_.add_output("model", trained_dir)

        # 5. Adherence per turn, before and after, on held-out instructions and dialogues
        #    (split by row over the processes; the main one writes the report).
        if config.eval.enabled:
            trained, trained_tokenizer = load_policy(str(trained_dir), config, device)
            report = run_evaluation(config, (str(trained_dir), trained, trained_tokenizer), (config.model, model, tokenizer), out, state=state)
        if config.eval.enabled and main:
            run_.add_output("eval", out / EVAL_JSON)
            run_.add_output("plot", out / PLOT)
            run_.extra["eval"] = {key: report.get(key) for key in ("table", "gain", "ratio_to_ceiling", "not_followed_when_reminded", "unchecked")}
            for turn, gain in report.get("gain", {}).items():
                rows = {f"eval/{label}": report["table"][label][turn] for label in report["table"] if report["table"][label][turn] is not None}
                run_.metrics.log(turn, **rows, **{"eval/gain": gain})
            log.info("GAtt adherence per turn (held-out instructions; once in turn 1, or in every turn):\n%s", table_markdown(report))
        # 6. The shared before/after evaluation on held-out prompts (core.evaluation), on
        #    the main process (as in the SFT and RS stages).
        model = tokenizer = trained = None  # free the samplers
        if config.eval.policy.enabled and main:
            from core.evaluation import evaluate_models as evaluate_policies
            from core.evaluation import format_table, save_evaluation

            result = evaluate_policies({"before": config.model, "after": str(trained_dir)}, config.eval.policy, config.reward_models,
                                       dtype=config.dtype, device=config.device, progress=config.progress)
            save_evaluation(result, out, name="policy_eval")
            run_.add_output("policy_eval", out / "policy_eval.json")
            run_.extra["policy_eval"] = {"models": result["models"], "paired": result["paired"]}
            log.info("GAtt: held-out evaluation of the policy:\n%s", format_table(result))
        state.wait_for_everyone()  # no process leaves before the main one has evaluated
        # 7. Manifest: written by StageRun on leaving this block (main process).
    if main:
        print(f"gatt: model: {trained_dir}")
    return trained_dir



def read_json(path: Path) -> dict | None:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
