"""PPO: seconds per iteration split into generate / score / forwards / train,
samples/s and peak memory of our PPO loop (`ppo.train.train`) in both memory modes
(and, with `--modes ...,top_layers`, separate models of which only the top
`--trainable-layers` decoder layers train), side by side with TRL's `RLOOTrainer` on
the same model, prompts, batch, response length and reward models.

Each trainer runs in a fresh subprocess (`python -m benchmarks.ppo _worker SPEC`), one
after the other, so that each peak memory is its own. Every trainer runs `--warmup`
untimed iterations, then `--iterations` timed ones; s/iteration is their mean.

Our PPO: `ppo.train.train` as the stage runs it, with the metrics sink replaced by a
meter. The loop calls `metrics.log(0, ...)` once its models, reward models and
optimizer are set up (peak memory is reset there) and `metrics.log(i, ...)` after
every iteration with the loop's own timings (`time_generate`, `time_score`,
`time_forward`: log-probs of policy and reference, values, KL and GAE; `time_train`:
the PPO epochs). After the last timed iteration the meter stops the loop (the final
checkpoint, model save and held-out evaluation are not part of an iteration).
Held-out evaluation is off (`eval.every: 0`; the one before training is on a single
prompt, 1 token).

RLOO: `trl.RLOOTrainer` with the same policy (no PEFT, so TRL builds its own
reference model), both reward models as `reward_funcs` (each renders the
conversation with its own chat template, as our `RewardScorer` does; TRL sums the two
scores where we gate them, the same two forwards), `generation_batch_size` = our
batch, `per_device_train_batch_size` = our minibatch, so an iteration is the same
batch / minibatch optimizer steps per epoch (`num_iterations` = our `ppo_epochs`),
β, clip 0.2, lr, temperature and max new tokens as ours. TRL's defaults that would
make it slower than ours on the same settings are switched off: activation
checkpointing (TRL defaults it on) and bf16 autocast (on by default; here it follows
`--dtype`). RLOO samples `--rloo-generations` completions per prompt, so its batch
holds batch / G distinct prompts. Its generate and score times come from wrapping
`RLOOTrainer._generate` and `_calculate_rewards`; the rest of the iteration (its
old- and reference-log-prob forwards and the training steps) is its "train".

Reward models: `--helpful-rm` / `--safety-rm`, or by default two untrained RMs
built on `--model`'s body (benchmarks.harness.make_untrained_rm): a trained RM of
the same shape costs the same to run.

Peak memory: CPU, the RSS high-water mark since setup finished (VmHWM, reset through
/proc/self/clear_refs); GPU, torch.cuda.max_memory_allocated since then. Both include
everything resident: policy, reference, critic, both reward models, optimizer state,
activations.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: see benchmarks/harness.py

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from benchmarks.harness import (  # noqa: E402
    LoadNote,
    choose_device,
    gib,
    make_untrained_rm,
    peak_memory,
    peak_memory_kind,
    process_peak_memory,
    reset_peak_memory,
    synchronize,
)
from benchmarks.results import markdown_table, report  # noqa: E402

MODES = ("separate", "top_layers", "lora", "rloo")
DEFAULT_MODES = ("separate", "lora", "rloo")


class _Done(Exception):
    """Raised by the meter after the last timed iteration: stops the loop there."""


# ----------------------------------------------------------------- workers


class PPOMeter:
    """Stands in for the stage's metrics.jsonl writer: records the loop's own per-iteration
    timings and the peak memory, and stops the loop after the last timed iteration."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.rows: list[dict] = []
        self.peak = 0

    def truncate_after(self, step: int) -> None:
        pass

    def log(self, step: int, **row) -> None:
        device = self.spec["device"]
        if step == 0:  # models, reward models and optimizer are loaded; the first iteration is next
            synchronize(device)
            reset_peak_memory(device)
            return
        self.rows.append(row)
        if step == self.spec["warmup"] + self.spec["iterations"]:
            synchronize(device)
            self.peak = peak_memory(device)
            raise _Done


def run_ours(spec: dict) -> dict:
    from accelerate import Accelerator

    from core.config import validate_config
    from ppo.config import PPOConfig
    from ppo.train import check_inputs, train

    mode = spec["mode"]
    config = validate_config(PPOConfig, {
        "output_dir": str(Path(spec["tmp"]) / f"ppo-{mode}"),
        "model": {"policy": spec["model"], "dtype": spec["dtype"], "memory": "lora" if mode == "lora" else "separate",
                  "critic_init": "helpfulness_rm" if mode == "separate" else "policy",
                  "trainable_layers": spec["trainable_layers"] if mode == "top_layers" else None,
                  "lora": {"enabled": True, "r": spec["lora_r"], "alpha": 2 * spec["lora_r"]}},
        "reward_models": {"helpfulness": spec["helpful_rm"], "safety": spec["safety_rm"], "batch_size": spec["rm_batch_size"], "dtype": spec["dtype"] if spec["dtype"] != "auto" else "float32"},
        "data": {"n_prompts": spec["n_prompts"]},
        "sampling": {"max_new_tokens": spec["new_tokens"], "temperature": spec["temperature"]},
        "ppo": {"batch_size": spec["batch_size"], "minibatch_size": spec["minibatch_size"], "chunk_size": spec["chunk_size"],
                "micro_batch_size": spec["micro_batch_size"], "ppo_epochs": spec["ppo_epochs"], "beta": spec["beta"]},
        "optim": {"learning_rate": spec["lr"]},
        "eval": {"every": 0, "n_prompts": 1, "sampling": {"max_new_tokens": 1, "batch_size": 1, "temperature": 0.0}},
        "iterations": spec["warmup"] + spec["iterations"],
        "checkpoint_every": 10**6,
        "progress": False,
    }, origin="benchmarks.ppo")
    meter = PPOMeter(spec)
    prompts, heldout = check_inputs(config)
    try:
        train(config, Accelerator(cpu=spec["device"] == "cpu"), meter, prompts, heldout)
    except _Done:
        pass
    timed = meter.rows[spec["warmup"]:]
    mean = {key: statistics.fmean(r[f"time_{key}"] for r in timed) for key in ("generate", "score", "forward", "train", "total")}
    return {**mean, "response_tokens": statistics.fmean(r["response_length"] for r in timed), "peak": meter.peak,
            "process_peak": process_peak_memory(spec["device"])}


def run_rloo(spec: dict) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import RLOOConfig, RLOOTrainer

    from core.models import load_causal_lm, load_tokenizer, torch_dtype
    from ppo.train import load_prompts

    device, dtype = spec["device"], spec["dtype"]
    steps_per_generation = spec["batch_size"] // spec["minibatch_size"]
    steps_per_iteration = steps_per_generation * spec["ppo_epochs"]
    n_iterations = spec["warmup"] + spec["iterations"]
    prompts = load_prompts("toyworld", "train", spec["n_prompts"], 0)
    dataset = Dataset.from_list([{"prompt": p["messages"]} for p in prompts])
    tokenizer = load_tokenizer(spec["model"])
    policy = load_causal_lm(spec["model"], dtype=dtype, device=device)
    rm_paths = [spec["helpful_rm"], spec["safety_rm"]]
    rms = [AutoModelForSequenceClassification.from_pretrained(p, dtype=torch_dtype(dtype)).to(device).eval() for p in rm_paths]
    rm_tokenizers = [load_tokenizer(p) for p in rm_paths]
    args = RLOOConfig(
        output_dir=str(Path(spec["tmp"]) / "rloo"),
        per_device_train_batch_size=spec["minibatch_size"],
        gradient_accumulation_steps=1,
        steps_per_generation=steps_per_generation,
        num_generations=spec["rloo_generations"],
        num_iterations=spec["ppo_epochs"],
        max_completion_length=spec["new_tokens"],
        temperature=spec["temperature"],
        top_p=1.0,
        beta=spec["beta"],
        epsilon=0.2,
        learning_rate=spec["lr"],
        lr_scheduler_type="constant",
        adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-5, weight_decay=0.1, max_grad_norm=1.0,
        max_steps=n_iterations * steps_per_iteration,
        bf16=dtype == "bfloat16",
        activation_checkpointing=False,
        use_cpu=device == "cpu",
        report_to="none",
        save_strategy="no",
        logging_steps=10**6,
        disable_tqdm=True,
        seed=0,
    )
    trainer = RLOOTrainer(model=policy, reward_funcs=rms, args=args, train_dataset=dataset, processing_class=tokenizer,
                          reward_processing_classes=rm_tokenizers)
    trainer.remove_callback(PrinterCallback)

    spent = {"generate": 0.0, "score": 0.0}
    lengths: list[float] = []

    def timed(name, inner, on_result=None):
        def wrapper(*a, **k):
            synchronize(device)
            start = time.perf_counter()
            result = inner(*a, **k)
            synchronize(device)
            spent[name] += time.perf_counter() - start
            if on_result:
                on_result(result)
            return result
        return wrapper

    trainer._generate = timed("generate", trainer._generate,
                              lambda out: lengths.append(statistics.fmean(len(c) for c in out[1])))
    trainer._calculate_rewards = timed("score", trainer._calculate_rewards)

    marks: list[dict] = []

    class Meter(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            synchronize(device)
            reset_peak_memory(device)
            marks.append({"t": time.perf_counter(), **spent})

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % steps_per_iteration == 0:
                synchronize(device)
                marks.append({"t": time.perf_counter(), **spent, "peak": peak_memory(device)})

    trainer.add_callback(Meter())
    trainer.train()
    first, last = marks[spec["warmup"]], marks[n_iterations]
    n = spec["iterations"]
    total = (last["t"] - first["t"]) / n
    generate = (last["generate"] - first["generate"]) / n
    score = (last["score"] - first["score"]) / n
    return {"generate": generate, "score": score, "forward": None, "train": total - generate - score, "total": total,
            "response_tokens": statistics.fmean(lengths[spec["warmup"]:]), "peak": last["peak"],
            "process_peak": process_peak_memory(device)}


def worker(spec: dict) -> None:
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    result = run_rloo(spec) if spec["mode"] == "rloo" else run_ours(spec)
    result["threads"] = torch.get_num_threads()
    Path(spec["result"]).write_text(json.dumps(result))


# ----------------------------------------------------------------- the benchmark


def measure(spec: dict) -> dict:
    """Run one trainer in a fresh process; its JSON result, or SystemExit with its log tail."""
    result = Path(spec["tmp"]) / f"result-{spec['mode']}.json"
    log = Path(spec["tmp"]) / f"log-{spec['mode']}.txt"
    spec = {**spec, "result": str(result)}
    start = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run([sys.executable, "-m", "benchmarks.ppo", "_worker", json.dumps(spec)], stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0 or not result.is_file():
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"benchmarks.ppo: the {spec['mode']} worker failed (exit {done.returncode}):\n{tail}")
    print(f"[ppo benchmark] {spec['mode']}: done in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    return json.loads(result.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ppo")
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when visible")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights of policy, reference, critic and RMs")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES),
                        help="separate, lora (our PPO's memory modes), top_layers (separate, only the top --trainable-layers "
                             "decoder layers trained: model.trainable_layers) and rloo (TRL)")
    parser.add_argument("--trainable-layers", type=int, default=6, help="model.trainable_layers of the top_layers mode")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per iteration (the paper: 512)")
    parser.add_argument("--minibatch-size", type=int, default=4, help="samples per optimizer step (the paper: 64)")
    parser.add_argument("--chunk-size", type=int, default=None, help="our prompts per generate call (default: the batch, as RLOO)")
    parser.add_argument("--micro-batch-size", type=int, default=None, help="our rows per forward (default: the minibatch, as RLOO)")
    parser.add_argument("--rm-batch-size", type=int, default=None, help="our RM scoring batch (default: the batch, as RLOO)")
    parser.add_argument("--ppo-epochs", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--beta", type=float, default=0.01)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--rloo-generations", type=int, default=2, help="RLOO completions per prompt")
    parser.add_argument("--n-prompts", type=int, default=64, help="toyworld train prompts the batches are drawn from")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations")
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations")
    parser.add_argument("--helpful-rm", default=None, help="reward-model folder (default: an untrained RM on --model)")
    parser.add_argument("--safety-rm", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    device = choose_device(args.device)
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes {sorted(unknown)} (known: {', '.join(MODES)})")
    load = LoadNote()

    with tempfile.TemporaryDirectory(prefix="bench-ppo-") as tmp:
        helpful = args.helpful_rm or str(make_untrained_rm(args.model, Path(tmp) / "rm_helpful", seed=1))
        safety = args.safety_rm or str(make_untrained_rm(args.model, Path(tmp) / "rm_safety", seed=2))
        spec = {
            "tmp": tmp, "device": device, "model": args.model, "dtype": args.dtype, "helpful_rm": helpful, "safety_rm": safety,
            "batch_size": args.batch_size, "minibatch_size": args.minibatch_size,
            "chunk_size": args.chunk_size or args.batch_size, "micro_batch_size": args.micro_batch_size or args.minibatch_size,
            "rm_batch_size": args.rm_batch_size or args.batch_size, "ppo_epochs": args.ppo_epochs, "new_tokens": args.new_tokens,
            "temperature": args.temperature, "beta": args.beta, "lr": args.lr, "lora_r": args.lora_r,
            "rloo_generations": args.rloo_generations, "n_prompts": args.n_prompts, "warmup": args.warmup,
            "iterations": args.iterations, "threads": args.threads, "trainable_layers": args.trainable_layers,
        }
        results = {mode: measure({**spec, "mode": mode}) for mode in modes}

    rloo = results.get("rloo")
    separate = results.get("separate")
    rows = []
    names = {"separate": "our PPO (ppo.train), separate models", "lora": "our PPO (ppo.train), one base + LoRA adapters",
             "top_layers": f"our PPO (ppo.train), separate models, top {args.trainable_layers} layers trained",
             "rloo": f"TRL RLOOTrainer (G={args.rloo_generations})"}
    for mode, r in results.items():
        rate = args.batch_size / r["total"]
        rows.append([
            names[mode], f"{r['total']:.1f}", f"{r['generate']:.1f}", f"{r['score']:.1f}",
            "in train" if r["forward"] is None else f"{r['forward']:.1f}", f"{r['train']:.1f}",
            f"{rate:.2f}", f"{rate / (args.batch_size / rloo['total']):.2f}x" if rloo else "-",
            f"{r['response_tokens']:.1f}", gib(r["peak"]), f"{r['peak'] / separate['peak']:.2f}" if separate else "-",
            gib(r["process_peak"]),
        ])
    table = markdown_table(
        ["trainer", "s/iteration", "generate s", "score s", "log-probs, values, GAE s", "train s", "samples/s", "samples/s vs RLOO",
         "mean response tokens", "peak memory GiB (iterations)", "peak vs separate", "process peak GiB (load included)"],
        rows,
    )
    threads = {r["threads"] for r in results.values()}
    notes = (
        f"Model {args.model} in {args.dtype} on {device}; batch {args.batch_size} samples, minibatch {args.minibatch_size}, "
        f"{args.ppo_epochs} PPO epoch(s) -> {args.batch_size // args.minibatch_size * args.ppo_epochs} optimizer steps per iteration; "
        f"up to {args.new_tokens} new tokens at T={args.temperature}; β={args.beta}; our generation in chunks of {spec['chunk_size']} "
        f"prompts, forwards in micro-batches of {spec['micro_batch_size']}, RM scoring in batches of {spec['rm_batch_size']}; "
        f"LoRA r={args.lora_r} on every linear layer. RLOO: {args.batch_size // args.rloo_generations} prompts x {args.rloo_generations} "
        f"completions per iteration. Reward models: {'given' if args.helpful_rm else 'two untrained RMs on the model body (same cost as trained ones)'}. "
        f"{args.warmup} warm-up + {args.iterations} timed iterations per trainer, each trainer in a fresh process. "
        f"Peak memory: {peak_memory_kind(device)}. Response lengths differ between trainers (sampling stops at the end-of-turn token), "
        f"so compare samples/s with the mean response tokens beside it. Worker threads {sorted(threads)}. {load}"
    )
    report(f"PPO iteration ({device}, {args.dtype})", table, notes)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_worker":
        worker(json.loads(sys.argv[2]))
    else:
        main(sys.argv[1:])
