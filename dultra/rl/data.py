"""Training data plumbing: a resumable example stream and supervised completion targets.

    stream = ExampleStream(examples, batch_size=4, seed=0, rank=0, world=1)
    batch = stream.next()            # list[Example]
    state = stream.state()           # {"epoch", "index", "size", "fingerprint"}: saved in checkpoints
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from dultra.data.example import Example
from dultra.errors import ConfigError, DataError


class ExampleStream:
    """Endless, seeded, epoch-shuffled batches; each process takes its own slice of a batch.

    The order depends only on (seed, epoch), so `load_state` resumes exactly where a
    checkpoint left off, over the same examples (other examples are a DataError).
    batch_size is the number of examples per process and step.
    """

    def __init__(self, examples: Sequence[Example], batch_size: int, seed: int = 0, rank: int = 0, world: int = 1):
        if not examples:
            raise DataError("the training set is empty")
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        self.examples, self.batch_size, self.seed = list(examples), batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.index = 0, 0
        self._order = self._permutation()
        # The examples' ids and prompts, in order: a checkpoint resumes only over these.
        digest = hashlib.sha256()
        for ex in self.examples:
            digest.update(f"{ex.id}\0{ex.prompt}\0".encode())
        self.fingerprint = digest.hexdigest()[:16]

    def _permutation(self) -> list[int]:
        g = torch.Generator().manual_seed(torch_seed(self.seed * 100_003 + self.epoch))
        return torch.randperm(len(self.examples), generator=g).tolist()

    def next(self) -> list[Example]:
        """The next global batch of batch_size * world examples, this process's share of it."""
        picked = []
        for _ in range(self.batch_size * self.world):
            if self.index == len(self._order):
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._permutation()
            picked.append(self.examples[self._order[self.index]])
            self.index += 1
        return picked[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]

    def state(self) -> dict[str, int | str]:
        return {"epoch": self.epoch, "index": self.index, "size": len(self.examples), "fingerprint": self.fingerprint}

    def load_state(self, state: dict[str, int | str]) -> None:
        epoch, index, size = int(state["epoch"]), int(state["index"]), state.get("size")  # older: no size
        if (size is not None and int(size) != len(self.examples)) or index > len(self.examples):
            had = f"{size} examples" if size is not None else f"at least {index}"
            raise DataError(f"the training set changed since the checkpoint (it had {had}, now {len(self.examples)}): "
                            "resume with the same tasks, data and train_size")
        if state.get("fingerprint", self.fingerprint) != self.fingerprint:  # older: no fingerprint
            raise DataError(f"the training set changed since the checkpoint (other examples, {len(self.examples)} as "
                            "before): resume with the same tasks, data and train_size")
        self.epoch, self.index = epoch, index
        self._order = self._permutation()


def encode_targets(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], gen_length: int, eos_id: int
) -> torch.Tensor:
    """Reference completions as (B, gen_length) ids: the solution, then EOS to the end.

    LLaDA's supervised recipe: the model learns to end a completion by filling its tail
    with EOS, which is what decoding expects. Raises DataError when a solution is missing or
    does not fit (with its EOS) in gen_length tokens.
    """
    rows = []
    for ex in examples:
        if not ex.solution:
            raise DataError(f"example {ex.id} has no reference solution to train on")
        ids = tokenizer(ex.solution, add_special_tokens=False)["input_ids"]
        if len(ids) + 1 > gen_length:
            raise DataError(
                f"example {ex.id}: its solution takes {len(ids)} tokens + EOS, more than gen_length "
                f"{gen_length}; raise gen_length or filter the data"
            )
        rows.append(ids + [eos_id] * (gen_length - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


def torch_seed(value: int) -> int:
    """`value` if a torch generator takes it (64 bits, signed or not), else wrapped into them:
    any config seed, however large, seeds a run (the seeds that fit keep their streams)."""
    return value if -(1 << 63) <= value < 1 << 64 else value % (1 << 64)
