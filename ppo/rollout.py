"""Small helpers of the PPO loop: the typed rollout record, sharding, forwards, reductions.

Multi-process equality (why the helpers look the way they do). A run on N processes
(`distributed: ddp` or `fsdp2`, see core/distributed.py) must take the same optimizer
step as one process with the same global batch:

* rollouts: the global batch is cut into fixed-size chunks; chunk c is generated
  with seed `base + c` and process r takes chunks r, r+N, r+2N, ... So the union of
  the N processes' samples is exactly the one-process sample set.
* minibatches: within each chunk the samples are permuted by a generator seeded by
  (seed, iteration, epoch, chunk), and minibatch j takes the j-th slice of every
  chunk. A global minibatch is therefore the same set of samples for any N, and
  each process holds minibatch_size / N of it.
* statistics: score whitening gathers every process's scores first; advantage
  whitening and explained variance are `ppo.core`'s functions with a `reduce`
  (`process_sum`) that sums their sums and counts over processes.
* losses: each process's token-mean loss is weighted by N times its share of the
  global token count of the minibatch; DDP and FSDP2 AVERAGE gradients over the N
  processes in the backward, so the step follows the global token mean, not a mean
  of per-process means.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from core.errors import NumericError
from ppo.core import Reduce


@dataclass(frozen=True)
class Rollout:
    """One process's share of a PPO batch. Rows are samples; R = response length.

    Immutable: each step of the loop returns a new record with its fields added
    (`rollout.with_(...)`), so a field means the same thing wherever it is read.

    prompts:        B toyworld prompt records ({"messages", "category", ...})
    texts:          B decoded responses
    index:          (B,) long, global sample index in the batch (chunk * chunk_size + row)
    query_ids:      (B, P) left-padded prompt tokens;   query_mask (B, P)
    response_ids:   (B, R) right-padded response tokens; response_mask (B, R) float,
                    1 up to and including the first end-of-turn token
    finished:       (B,) bool, True where the response ended with an end-of-turn token
                    (False: cut at sampling.max_new_tokens, the missing-EOS penalty applies)
    logprobs:       (B, R) policy log-probs of the sampled tokens at rollout time
    ref_logprobs:   (B, R) reference (initial policy) log-probs
    values:         (B, R) critic values at rollout time
    rm_reward:      (B,) R_c, Llama 2's gated RM probability (None when the reward is a function)
    reward:         (B,) the raw reward of `reward.kind` (R_c, one RM's probability, or a function's value)
    score_logit:    (B,) LOGIT(reward) for an RM probability, the value itself for a function: the score before WHITEN
    scores:         (B,) WHITEN(LOGIT(R_c)) (or WHITEN of the function's value), with the
                    missing-EOS penalty: the sequence score
    kl:             (B, R) per-token KL estimate (0 on padding)
    rewards:        (B, R) -β·KL per token, plus the score at the last response token
    advantages:     (B, R) GAE advantages (whitened when asked)
    returns:        (B, R) value targets = advantages + values (before whitening)
    """

    prompts: list[dict]
    texts: list[str]
    index: torch.Tensor
    query_ids: torch.Tensor
    query_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    finished: torch.Tensor | None = None
    logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    rm_reward: torch.Tensor | None = None
    reward: torch.Tensor | None = None
    score_logit: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def with_(self, **fields_to_set) -> Rollout:
        """A copy with these fields set."""
        return replace(self, **fields_to_set)

    def select(self, rows: torch.Tensor) -> Rollout:
        """The sub-rollout of `rows`, with padding columns that no row uses trimmed."""
        keep_p = int(self.query_mask[rows].sum(1).max())
        keep_r = int(self.response_mask[rows].sum(1).max())
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value[rows]
                if value.dim() == 2:
                    value = value[:, value.shape[1] - keep_p:] if f.name.startswith("query") else value[:, :keep_r]
            elif isinstance(value, list):
                value = [value[i] for i in rows.tolist()]
            picked[f.name] = value
        return Rollout(**picked)


# ----------------------------------------------------------------- sharding


def iteration_prompts(prompts: list[dict], batch_size: int, iteration: int, seed: int) -> list[dict]:
    """The global batch of iteration `iteration` (1-based): a stateless sampler.

    Prompts are visited in a fresh permutation per pass over the data (seeded by
    `seed` and the pass number), so the data position is a function of the
    iteration alone and a resumed run draws exactly the prompts it would have.
    """
    n = len(prompts)
    start = (iteration - 1) * batch_size
    batch = []
    for position in range(start, start + batch_size):
        data_epoch, offset = divmod(position, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + data_epoch))
        batch.append(prompts[int(order[offset])])
    return batch


def my_chunks(n_chunks: int, rank: int, world: int) -> list[int]:
    """Global chunk indices that process `rank` of `world` rolls out."""
    if n_chunks % world:
        raise ValueError(f"{n_chunks} rollout chunks cannot be shared evenly by {world} processes")
    return list(range(rank, n_chunks, world))


def minibatch_rows(n_local_chunks: int, chunk_size: int, n_minibatches: int, chunk_ids: list[int], seed: int, iteration: int, epoch: int) -> list[torch.Tensor]:
    """Local row indices of each minibatch (see the module docstring).

    Rows of local chunk k are k*chunk_size .. (k+1)*chunk_size - 1; the permutation
    of a chunk depends only on its global id, never on the number of processes.
    """
    per_chunk = chunk_size // n_minibatches
    slices: list[list[int]] = [[] for _ in range(n_minibatches)]
    for local, global_id in enumerate(chunk_ids):
        g = torch.Generator().manual_seed(((seed * 1_000_003 + iteration) * 1009 + epoch) * 100_003 + global_id)
        perm = torch.randperm(chunk_size, generator=g) + local * chunk_size
        for j in range(n_minibatches):
            slices[j].extend(perm[j * per_chunk:(j + 1) * per_chunk].tolist())
    return [torch.tensor(sorted(rows), dtype=torch.long) for rows in slices]


# ------------------------------------------------------------------ padding


def pad_to(t: torch.Tensor, width: int, value, left: bool) -> torch.Tensor:
    extra = width - t.shape[1]
    if extra <= 0:
        return t
    pad = torch.full((t.shape[0], extra), value, dtype=t.dtype, device=t.device)
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def concat_chunks(batches, prompts_per_chunk: list[list[dict]], chunk_ids: list[int], chunk_size: int, pad_id: int) -> Rollout:
    """Join per-chunk GenerationBatches into one Rollout (prompts re-left-padded, responses re-right-padded)."""
    width_p = max(b.prompt_ids.shape[1] for b in batches)
    width_r = max(b.response_ids.shape[1] for b in batches)
    return Rollout(
        prompts=[p for chunk in prompts_per_chunk for p in chunk],
        texts=[t for b in batches for t in b.texts],
        index=torch.cat([torch.arange(c * chunk_size, c * chunk_size + len(b.texts)) for c, b in zip(chunk_ids, batches)]),
        query_ids=torch.cat([pad_to(b.prompt_ids, width_p, pad_id, left=True) for b in batches]),
        query_mask=torch.cat([pad_to(b.prompt_mask, width_p, 0, left=True) for b in batches]),
        response_ids=torch.cat([pad_to(b.response_ids, width_r, pad_id, left=False) for b in batches]),
        response_mask=torch.cat([pad_to(b.response_mask, width_r, 0.0, left=False) for b in batches]),
        finished=torch.cat([b.finished.to(torch.bool).cpu() for b in batches]).to(batches[0].response_ids.device),
    )


# ----------------------------------------------------------------- forwards


def model_inputs(query_ids, query_mask, response_ids, response_mask):
    """Prompt + response as one sequence, with position ids from the attention mask.

    Position ids must count real tokens only (as `generate` does with left padding);
    otherwise the forward would see other positions than the rollout did and the
    old log-probs would not match the policy that sampled them.
    """
    input_ids = torch.cat([query_ids, response_ids], dim=1)
    attention_mask = torch.cat([query_mask.long(), response_mask.long()], dim=1)
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids


def response_slice(per_position: torch.Tensor, prompt_width: int) -> torch.Tensor:
    """Outputs at positions P-1 .. P+R-2: those that predict (or value the state before) each response token."""
    return per_position[:, prompt_width - 1:-1]


def response_logits(logits: torch.Tensor, response_width: int) -> torch.Tensor:
    """`response_slice` counted from the end: the same (B, R, V) slice of full (B, P+R, V)
    logits or of the last R+1 positions' (`logits_to_keep=R+1`)."""
    return logits[:, -(response_width + 1):-1]


def micro_batches(n: int, size: int) -> list[torch.Tensor]:
    return [torch.arange(i, min(i + size, n)) for i in range(0, n, size)]


# ---------------------------------------------------------- distributed sums


def process_sum(accelerator) -> Reduce | None:
    """The `reduce` of `ppo.core`'s whole-batch statistics: accelerate's sum over
    processes, or None (this process's data is the whole batch)."""
    if accelerator.num_processes == 1:
        return None
    return lambda t: accelerator.reduce(t.to(accelerator.device), reduction="sum").cpu()


def global_sum(accelerator, *values: float | torch.Tensor) -> list[float]:
    """Sum scalars over processes (float64)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        t = accelerator.reduce(t, reduction="sum")
    return t.tolist()


def check_finite(accelerator, what: str, iteration: int, *tensors: torch.Tensor) -> None:
    """Raise NumericError on every process if any process holds a NaN or inf in `tensors`."""
    bad = sum(int((~torch.isfinite(t.detach())).any()) for t in tensors if t is not None)
    if accelerator.num_processes > 1:
        (bad,) = global_sum(accelerator, bad)
    if bad:
        raise NumericError(f"non-finite {what} at iteration {iteration} (NaN or inf); the last checkpoint is left as it was")
