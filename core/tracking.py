"""Experiment tracking: where a stage's metrics go besides `metrics.jsonl`, and the hub.

Every stage's config has the same key, spelled as transformers and TRL spell it:

    report_to: [tensorboard, wandb]     # or mlflow; none (the default) or [] for none

`core.run.StageRun` opens one sink per name on entering (only the main process makes a
StageRun), hands each the same numbers under the same names, and closes them all when
the stage ends, failed or not:

- a metric `key` that a stage logs at `step` is `<stage>/<key>` in every sink (for
  example `sft/loss`, `gatt/eval/gain`); only numbers are sent (a bool, a string, a list
  or a non-finite value, which `metrics.jsonl` stores as null, is skipped in every sink);
- tensorboard: event files in `OUT/tensorboard/`;
- wandb: one run per stage (`name=<stage>`, the resolved config as its config) under
  `OUT/wandb/`, project `$WANDB_PROJECT` or `llama-rlhf`; `WANDB_MODE=offline` needs no
  network or account (`wandb sync OUT/wandb/offline-run-*` uploads it later). The
  stage's step is the x axis (`step`), so a stage that logs step 0 after step 5 keeps
  both rows;
- mlflow: one run per stage in experiment `$MLFLOW_EXPERIMENT_NAME` or `llama-rlhf`, at
  `$MLFLOW_TRACKING_URI`, or else a file store in `OUT/mlruns/` (`mlflow ui
  --backend-store-uri OUT/mlruns`).

A sink whose package is missing is a `ConfigError` naming `report_to` and the pip
package, raised when the StageRun is made, before the stage writes anything.

`push_to_hub(model_dir, repo_id, ...)` uploads a saved model folder (with its model
card) to the Hugging Face Hub; StageRun calls it when a stage with `push_to_hub` set
completes.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BeforeValidator

from core.errors import ConfigError, RLHFError

Tracker = Literal["tensorboard", "wandb", "mlflow"]
# name -> (module that must import, pip package that provides it)
PACKAGES: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow-skinny"),
}
# What every config that had a `tensorboard: bool` says to a config that still has it.
TRACKING_RENAMED = {"tensorboard": "report_to (a list: report_to: [tensorboard])"}
WANDB_STEP = "step"  # wandb's x axis for every metric (a hidden metric, not a tracked name)


def _as_list(value: Any) -> Any:
    """`none`, null, "" or [] -> []; a single name -> [name]; a list is kept as it is.
    `none` beside other names is refused (transformers would silently ignore it)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value] if value.strip() else []
    if isinstance(value, (list, tuple)):
        names = [name.strip() if isinstance(name, str) else name for name in value]
        if "none" in names:
            if len(names) > 1:
                raise ValueError(f"'none' cannot be listed with other sinks (got {list(value)})")
            return ()
        return tuple(dict.fromkeys(names))  # repeated names once, in order
    return value


# A tuple of sink names; validation accepts a single name, none/null, or a list.
ReportTo = Annotated[tuple[Tracker, ...], BeforeValidator(_as_list)]


def check_report_to(report_to: tuple[str, ...] | list[str], key: str = "report_to") -> None:
    """ConfigError naming `key` and the pip package for each sink whose package is missing."""
    missing = [(name, PACKAGES[name][1]) for name in report_to if importlib.util.find_spec(PACKAGES[name][0]) is None]
    if missing:
        names = ", ".join(name for name, _ in missing)
        packages = " ".join(package for _, package in missing)
        raise ConfigError(f"key '{key}': {names} is not installed; `pip install {packages}` "
                          f"(or `pip install -e '.[tracking]'`), or remove it from {key}")


_BAD_CHARACTERS = re.compile(r"[^\w.\- /]")


def tracked_name(stage: str, key: str) -> str:
    """The name of metric `key` in every sink: `<stage>/<key>`, with any character that
    one of them refuses (MLflow allows letters, digits, `_ - . /` and spaces) as `_`."""
    return _BAD_CHARACTERS.sub("_", f"{stage}/{key}")


def tracked_scalars(stage: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of one logged row, named for the sinks; everything else is skipped."""
    scalars = {}
    for key, value in metrics.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        scalars[tracked_name(stage, key)] = value
    return scalars


class Sink(Protocol):
    def log(self, step: int, scalars: dict[str, float]) -> None: ...

    def close(self, failed: bool) -> None: ...


class TensorBoardSink:
    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def close(self, failed: bool) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, folder: Path, stage: str, config: dict):
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "llama-rlhf",
            dir=str(folder),
            name=stage,
            job_type=stage,
            config=config,
            # A stage may run another inside it (RS and GAtt fine-tune through the SFT
            # stage): each gets its own run, logged to through its own handle.
            reinit="create_new",
            # Console capture by nested runs would copy every line twice; WANDB_CONSOLE
            # turns it back on.
            settings=wandb.Settings(console=os.environ.get("WANDB_CONSOLE") or "off"),
        )
        # The stage's own step is the x axis: wandb's internal step must only grow, and
        # some stages log step 0 (a report) after later steps.
        self.run.define_metric(WANDB_STEP, hidden=True)
        self.run.define_metric("*", step_metric=WANDB_STEP, step_sync=True)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if scalars:
            self.run.log({**scalars, WANDB_STEP: step})

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class MlflowSink:
    def __init__(self, folder: Path, stage: str, config: dict):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (folder / "mlruns").resolve().as_uri()
            # MLflow 3 refuses a file store unless asked; this folder is the local default.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        # A client of its own (no global active run): a stage inside another gets its own run.
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "llama-rlhf"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=stage, tags={"stage": stage}).info.run_id
        params = [Param(key, str(value)[:6000]) for key, value in _flatten(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def log(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        metrics = [Metric(name, float(value), now_ms, int(step)) for name, value in scalars.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def open_sinks(report_to: tuple[str, ...] | list[str], folder: Path, stage: str, config: dict) -> list[Sink]:
    """One open sink per name; if one cannot open, those already open are closed and an
    RLHFError names `report_to` and the sink."""
    makers = {
        "tensorboard": lambda: TensorBoardSink(folder),
        "wandb": lambda: WandbSink(folder, stage, config),
        "mlflow": lambda: MlflowSink(folder, stage, config),
    }
    sinks: list[Sink] = []
    for name in report_to:
        try:
            sinks.append(makers[name]())
        except Exception as exc:
            close_sinks(sinks, failed=True)
            hint = " (no network? set WANDB_MODE=offline)" if name == "wandb" else ""
            raise RLHFError(f"report_to: {name} could not start{hint}: {type(exc).__name__}: {exc}") from exc
    return sinks


def close_sinks(sinks: list[Sink], failed: bool) -> None:
    """Close every sink, even when one of them fails to (the first failure is raised after)."""
    first: Exception | None = None
    for sink in sinks:
        try:
            sink.close(failed)
        except Exception as exc:  # noqa: BLE001 - the others must still close
            first = first or exc
    if first is not None:
        raise first


def push_to_hub(model_dir: str | os.PathLike, repo_id: str, stage: str) -> str:
    """Upload the model folder (weights, tokenizer, model card) to hub repo `repo_id`,
    creating it if needed; returns the commit URL. Needs a token (`hf auth login` or HF_TOKEN)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(model_dir),
                               commit_message=f"{stage}: upload {Path(model_dir).name}")
    return str(getattr(commit, "commit_url", commit))
