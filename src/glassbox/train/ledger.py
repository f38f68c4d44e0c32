"""The write ledger: how each optimizer step writes into every tensor and every head's Q/K/V/O slice.

For each recorded step and each row (a whole tensor, or one head's slice of it) we keep four norms:
  grad_norm          the gradient the step received (before clipping)
  update_norm        what the optimizer actually wrote: |w_after - w_before|
  weight_norm        the weights after the step
  change_since_init  |w_after - w_init|
All rows are computed at once: every trainable parameter is flattened into one vector, each element carries the
index of its tensor row and of its head row, and one `index_add_` sums the squares per row. That keeps the cost
a handful of tensor ops per step whatever the number of heads (the overhead benchmark is benchmarks/train.py).
Frozen parameters (the zeroed MLPs of an attention-only preset) receive no writes and have no rows.
"""

from __future__ import annotations

from dataclasses import dataclass

QUANTITIES = ("grad_norm", "update_norm", "weight_norm", "change_since_init")


@dataclass(frozen=True)
class Row:
    tensor: str
    level: str
    layer: int | None
    head: int | None
    kind: str | None  # q|k|v|o for head rows


class Ledger:
    def __init__(self, model, architecture: str, config: dict):
        import torch

        from glassbox.anatomy import roles

        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        dims = roles.Dims.from_config(architecture, config)
        self.rows: list[Row] = []
        tensor_labels, head_labels, head_rows = [], [], []
        for i, (name, p) in enumerate(self.params):
            level, layer = roles.classify(architecture, name)
            self.rows.append(Row(name, level, layer, None, None))
            tensor_labels.append(torch.full((p.numel(),), i, dtype=torch.long))
            label = torch.full(p.shape, -1, dtype=torch.long)
            for hs in roles.head_slices(architecture, name, tuple(p.shape), dims):
                label[hs.index(label.ndim)] = len(head_rows)
                head_rows.append(Row(name, level, layer, hs.head, hs.kind))
            head_labels.append(label.reshape(-1))
        self.n_tensors = len(self.rows)
        self.rows.extend(head_rows)
        self.tensor_labels = torch.cat(tensor_labels)
        head_label = torch.cat(head_labels)
        # elements outside every head go to one spare bucket at the end, dropped afterwards
        self.head_labels = torch.where(head_label < 0, len(head_rows), head_label)
        self.n_heads_rows = len(head_rows)
        self.init = self._flat_weights().clone()
        self.steps: list[int] = []
        self.values: list = []  # one [4, n_rows] float32 array per recorded step
        self._before = None
        self._grad = None

    def _flat_weights(self):
        import torch

        return torch.cat([p.detach().reshape(-1) for _, p in self.params])

    def _flat_grads(self):
        import torch

        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1)
                          for _, p in self.params])

    def before_step(self) -> None:
        """Call after backward, before clipping and optimizer.step()."""
        self._before = self._flat_weights().clone()
        self._grad = self._flat_grads()

    def after_step(self, step: int) -> None:
        import torch

        w = self._flat_weights()
        x = torch.stack([self._grad, w - self._before, w, w - self.init])
        sq = x * x
        per_tensor = torch.zeros(4, self.n_tensors).index_add_(1, self.tensor_labels, sq)
        per_head = torch.zeros(4, self.n_heads_rows + 1).index_add_(1, self.head_labels, sq)[:, :-1]
        self.steps.append(step)
        self.values.append(torch.cat([per_tensor, per_head], dim=1).sqrt_().numpy())
        self._before = self._grad = None

    def take_table(self):
        """The rows recorded since the last call, as a pyarrow Table (one row per step × tensor/head row)."""
        import numpy as np
        import pyarrow as pa

        n_steps, n_rows = len(self.steps), len(self.rows)
        values = np.stack(self.values) if self.values else np.zeros((0, 4, n_rows), dtype=np.float32)
        cols = {
            "step": pa.array(np.repeat(np.asarray(self.steps, dtype=np.int64), n_rows)),
            "tensor": pa.array([r.tensor for r in self.rows] * n_steps, pa.string()),
            "level": pa.array([r.level for r in self.rows] * n_steps, pa.string()),
            "layer": pa.array([r.layer for r in self.rows] * n_steps, pa.int32()),
            "head": pa.array([r.head for r in self.rows] * n_steps, pa.int32()),
            "kind": pa.array([r.kind for r in self.rows] * n_steps, pa.string()),
        }
        for q, name in enumerate(QUANTITIES):
            cols[name] = pa.array(values[:, q, :].reshape(-1).astype(np.float32))
        self.steps, self.values = [], []
        return pa.table(cols)
