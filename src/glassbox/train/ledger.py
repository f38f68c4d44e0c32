"""The write ledger: how each optimizer step writes into every tensor and every head's Q/K/V/O slice.

For each recorded step and each row (a whole tensor, or one head's slice of it) we keep four norms:
  grad_norm          the gradient the step received (before clipping)
  update_norm        what the optimizer actually wrote: |w_after - w_before|
  weight_norm        the weights after the step
  change_since_init  |w_after - w_init|
Each quantity is one fused `torch._foreach_norm` over the list of all rows (whole tensors and per-head views),
so the cost is a handful of kernel launches per step whatever the number of heads (benchmarks/train.py).
Frozen parameters (the zeroed MLPs of an attention-only preset) receive no writes and have no rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from glassbox.anatomy import roles

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
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        dims = roles.Dims.from_config(architecture, config)
        self.rows: list[Row] = []
        head_rows: list[Row] = []
        # per parameter with heads: (parameter index, axis, number of blocks) when the head blocks tile that axis
        # in equal consecutive pieces (the usual case: one reshape sums them all), else a list of index tuples
        self.tiled: list[tuple[int, int, int]] = []
        self.sliced: list[tuple[int, tuple]] = []
        for i, (name, p) in enumerate(self.params):
            level, layer = roles.classify(architecture, name)
            self.rows.append(Row(name, level, layer, None, None))
            slices = sorted(roles.head_slices(architecture, name, tuple(p.shape), dims), key=lambda hs: hs.start)
            if not slices:
                continue
            size = slices[0].stop - slices[0].start
            tiles = all(hs.axis == slices[0].axis and hs.start == k * size and hs.stop == (k + 1) * size
                        for k, hs in enumerate(slices)) and slices[-1].stop == p.shape[slices[0].axis]
            if tiles:
                self.tiled.append((i, slices[0].axis, len(slices)))
            else:
                self.sliced.extend((i, hs.index(p.ndim)) for hs in slices)
            head_rows.extend(Row(name, level, layer, hs.head, hs.kind) for hs in slices)
        # head rows are stored tiled parameters first, then the sliced ones, in parameter order within each
        tiled_ids = {i for i, _, _ in self.tiled}
        order = [r for r in head_rows if self._index_of(r.tensor) in tiled_ids]
        order += [r for r in head_rows if self._index_of(r.tensor) not in tiled_ids]
        self.rows.extend(order)
        self.init = self._weights_copy()
        self.steps: list[int] = []
        self.values: list = []  # one [4, n_rows] float32 array per recorded step
        self._before = None
        self._grads = None

    def _weights_copy(self) -> list:
        import torch

        return torch._foreach_mul([p.detach() for _, p in self.params], 1.0)

    def _index_of(self, name: str) -> int:
        return next(i for i, (n, _) in enumerate(self.params) if n == name)

    def before_step(self) -> None:
        """Call after backward, before clipping and optimizer.step()."""
        import torch

        if self._before is None:
            self._before = self._weights_copy()
        else:  # reuse the buffers: no allocation per step
            torch._foreach_copy_(self._before, [p.detach() for _, p in self.params])
        self._grads = [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for _, p in self.params]

    def after_step(self, step: int) -> None:
        import torch

        weights = [p.detach() for _, p in self.params]
        quantities = (self._grads, torch._foreach_sub(weights, self._before), weights,
                      torch._foreach_sub(weights, self.init))
        parts = [torch.stack([torch.stack(torch._foreach_norm(list(q))) for q in quantities])]  # [4, tensors]
        for i, axis, blocks in self.tiled:
            x = torch.stack([q[i] for q in quantities])
            x = (x * x).movedim(axis + 1, 1).reshape(4, blocks, -1)
            parts.append(x.sum(2).sqrt_())  # [4, heads of this tensor]
        if self.sliced:
            parts.append(torch.stack([torch.stack(torch._foreach_norm([q[i][index] for i, index in self.sliced]))
                                      for q in quantities]))
        self.steps.append(step)
        self.values.append(torch.cat(parts, dim=1).numpy())
        self._grads = None

    def take_table(self):
        """The rows recorded since the last call, as a pyarrow Table (one row per step × tensor/head row)."""
        import numpy as np
        import pyarrow as pa

        n_steps, n_rows = len(self.steps), len(self.rows)
        values = np.stack(self.values) if self.values else np.zeros((0, 4, n_rows), dtype=np.float32)
        # the row descriptions repeat every step: build them once and repeat them with `take`
        per_row = pa.table({
            "tensor": pa.array([r.tensor for r in self.rows], pa.string()),
            "level": pa.array([r.level for r in self.rows], pa.string()),
            "layer": pa.array([r.layer for r in self.rows], pa.int32()),
            "head": pa.array([r.head for r in self.rows], pa.int32()),
            "kind": pa.array([r.kind for r in self.rows], pa.string()),
        }).take(pa.array(np.tile(np.arange(n_rows), n_steps)))
        cols = {"step": pa.array(np.repeat(np.asarray(self.steps, dtype=np.int64), n_rows))}
        cols.update({name: per_row.column(name) for name in per_row.column_names})
        for q, name in enumerate(QUANTITIES):
            cols[name] = pa.array(values[:, q, :].reshape(-1).astype(np.float32))
        self.steps, self.values = [], []
        return pa.table(cols)
