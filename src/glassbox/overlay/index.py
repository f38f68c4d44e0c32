"""The link index: a corpus turned into readable, memory-mapped arrays, built once and never loaded whole.

Files in the index folder (all `.npy`, opened with mmap_mode="r"), sized by the tokens the corpus uses:
  tokens.npy        the corpus as token ids (uint16 when the vocabulary fits), documents separated by `sep`
  types.npy         the U token ids the corpus uses, ascending (local id j ↔ types[j]); cum.npy uint32[U+1]:
                    cumulative counts, so c(types[j]) = cum[j+1] − cum[j] and [cum[j], cum[j+1]) is that
                    token's suffix-array interval
  next_*.npy        next-token links, CSR over local ids: for token a, next_ids[next_off[j]:next_off[j+1]] are
                    the K most frequent followers t, next_w their share P(t | a) (float16), strongest first
  cooc_*.npy        co-occurrence links: t seen 2..W tokens after a, each sighting weighted 1/distance,
                    normalized per a like next_w (the longer-range "semantic" neighbours of the seed's notes);
                    only links weighing more than one sighting can (0.5), i.e. seen at least twice: in a small
                    corpus most pairs are seen once, say nothing about co-occurrence, and were most of its bytes
  sem_*.npy         semantic neighbours (opt-in, `--semantic`): the K tokens of the corpus whose input
                    embeddings are nearest by cosine (the notes' C_K(w)), weight = the cosine
  sa.npy            suffix array of tokens.npy (pydivsufsort) in the narrowest byte width that holds a position
                    (uint8 [N, width]; 3 bytes up to 16.7 M tokens), for the ∞-gram counts (overlay/ngram.py)
  h{k}_*.npy        for contexts of k = 1..4 tokens seen more than `cap` times: their next tokens and where
                    each one's run starts in the suffix array (so no step ever searches a large interval)
  feedback.npz      consolidated feedback links (a, b, t, weight) and the last feedback id they hold;
                    written by `consolidate`
  meta.json         sizes, K, W, cap, the discounts, the tokenizer, an index id; tokenizer/ its own files
The build is a function of the corpus's token shards (`corpus_tokens`: shards in order, documents in order,
`sep` after each), so a sharded tokenizer (Ray) gives the identical index.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glassbox import fileio, progress
from glassbox.errors import BadInput
from glassbox.overlay.ngram import HEAVY, NGram, Packed, heavy_tables

FORMAT = "glassbox-overlay-index/2"
COOC_MIN_WEIGHT = 0.5  # one sighting weighs 1/distance ≤ 0.5: a kept co-occurrence link was seen at least twice
HEAVY_ARRAYS = [f"h{k}_{x}" for k in range(1, HEAVY + 1) for x in ("lo", "hi", "off", "tok", "start")]
ARRAYS = ["tokens", "types", "cum", "next_off", "next_ids", "next_w", "cooc_off", "cooc_ids", "cooc_w", "sa",
          "sem_off", "sem_ids", "sem_w", *HEAVY_ARRAYS]
OPTIONAL = {"sa", "sem_off", "sem_ids", "sem_w", *HEAVY_ARRAYS}
SIZE_GROUPS = {"tokens": "tokens", "types": "vocabulary", "cum": "vocabulary", "sa": "suffix array",
               "next": "next links", "cooc": "co-occurrence links", "sem": "semantic neighbours",
               "h": "heavy contexts"}


@dataclass
class BuildOptions:
    k: int = 32  # next-token links (and semantic neighbours) kept per token
    cooc_k: int = 16  # co-occurrence links kept per token (the accumulator's weakest source: weight 0.1)
    window: int = 8  # co-occurrence window (tokens after a)
    suffix_array: bool = True
    semantic_from: str | None = None  # a model whose input embeddings give the semantic neighbours (opt-in)
    cap: int = 256  # a context seen more often than this stores its children (see overlay/ngram.py)


def tokenize_documents(docs: list[str], tokenizer: Any, batch: int = 64) -> list[list[int]]:
    out: list[list[int]] = []
    chunks = [docs[i : i + batch] for i in range(0, len(docs), batch)]
    for chunk in progress.track(chunks, "tokenizing"):
        out.extend(tokenizer(chunk, add_special_tokens=False)["input_ids"])
    return out


def separator_id(tokenizer: Any) -> int:
    for tid in (tokenizer.eos_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id):
        if tid is not None:
            return int(tid)
    return 0


def corpus_tokens(shards: list[list[list[int]]], sep: int) -> np.ndarray:
    """The corpus array from tokenized shards: shards in order, documents in order, `sep` after each.
    Deterministic, so sharded tokenization (e.g. on Ray) merges into exactly the sequential index."""
    return np.fromiter((t for shard in shards for d in shard for t in (*d, sep)), dtype=np.int64)


def build(docs: list[str], tokenizer: Any, out: str | Path, options: BuildOptions | None = None,
          source: str = "", tokenizer_spec: str = "", parts: list[tuple[str, int]] | None = None) -> Path:
    """Tokenize `docs` and write an index folder at `out` (built in a temp folder, renamed into place)."""
    return build_from_shards([tokenize_documents(docs, tokenizer)], tokenizer, out, options, source, tokenizer_spec,
                             parts)


def source_ranges(shards: list[list[list[int]]], parts: list[tuple[str, int]]) -> list[dict]:
    """Each source's corpus token range [start, end): `parts` = (spec, number of documents) in corpus order
    (every document is followed by `sep`, see `corpus_tokens`)."""
    ends = np.cumsum([len(d) + 1 for s in shards for d in s])
    out, first = [], 0
    for spec, n in parts:
        start = int(ends[first - 1]) if first else 0
        out.append({"spec": spec, "documents": n, "start": start, "end": int(ends[first + n - 1]) if n else start})
        first += n
    return out


def build_from_shards(shards: list[list[list[int]]], tokenizer: Any, out: str | Path,
                      options: BuildOptions | None = None, source: str = "", tokenizer_spec: str = "",
                      parts: list[tuple[str, int]] | None = None) -> Path:
    """Write an index folder at `out` from already tokenized document shards (see `corpus_tokens`); `parts`:
    (spec, documents) per source, in order, recorded as token ranges (meta "sources") for the gate."""
    options = options or BuildOptions()
    out = Path(out)
    fileio.restore_dir(out)  # a build killed mid-swap left the old index aside: back first, then the checks
    if out.exists() and not (out / "meta.json").exists() and any(out.iterdir()):
        raise BadInput("exists and is not an overlay index; refusing to overwrite it", out)
    vocab = len(tokenizer)
    sep = separator_id(tokenizer)
    tokens = corpus_tokens(shards, sep)
    n_docs = sum(len(s) for s in shards)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = fileio.temp_dir_beside(out)  # `.<name>.<pid>.*`: a killed build's folder is swept by the next
    try:
        extra = write_arrays(tmp, tokens, vocab, options)
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        meta = {
            "format": FORMAT, "id": uuid.uuid4().hex[:12], "source": source, "tokenizer": tokenizer_spec,
            "vocab_size": vocab, "sep": sep, "n_tokens": int(len(tokens)), "n_documents": n_docs,
            "k": options.k, "cooc_k": options.cooc_k, "cooc_min_weight": COOC_MIN_WEIGHT, "window": options.window,
            "suffix_array": options.suffix_array,
            "semantic_from": options.semantic_from, **extra,
        }
        if parts and len(parts) > 1:
            meta["sources"] = source_ranges(shards, parts)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        fileio.kill_point("overlay-build:swap")
        fileio.replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_arrays(folder: Path, tokens: np.ndarray, vocab: int, options: BuildOptions) -> dict:
    """The token array, the local vocabulary, both link tables, (opt-in) the semantic neighbours and the
    suffix array with its heavy contexts. Returns what meta.json records about them (cap, discounts)."""
    dtype = np.uint16 if vocab <= 65536 else np.uint32
    tok = tokens.astype(dtype)
    np.save(folder / "tokens.npy", tok)
    counts = np.bincount(tokens, minlength=vocab)
    types = np.flatnonzero(counts)
    np.save(folder / "types.npy", types.astype(dtype))
    cum = np.concatenate([[0], np.cumsum(counts[types])])
    np.save(folder / "cum.npy", cum.astype(_uint_for(len(tokens))))
    for name, k, distances, floor in (("next", options.k, [1], 0.0),
                                      ("cooc", options.cooc_k, list(range(2, options.window + 1)), COOC_MIN_WEIGHT)):
        off, nbr, w = link_table(tokens, vocab, k, distances, name, min_weight=floor)
        _save_csr(folder, name, off, nbr, w, types, dtype)
    if options.semantic_from:
        off, nbr, w = semantic_table(types, options.semantic_from, options.k)
        _save_csr(folder, "sem", off, nbr, w, types, dtype)
    extra: dict = {"cap": options.cap}
    if options.suffix_array:
        from pydivsufsort import divsufsort

        sa = np.asarray(divsufsort(tok), dtype=np.int64)
        width = Packed.width_for(max(1, len(tok) - 1))
        np.save(folder / "sa.npy", Packed.pack(sa, width))
        heavy, discounts = heavy_tables(tokens, sa, options.cap)
        pos = _uint_for(len(tokens))
        for name, arr in heavy.items():
            np.save(folder / f"{name}.npy", arr.astype(dtype if name.endswith("_tok") else pos))
        extra.update(sa_width=width, discounts=discounts)
    return extra


def _uint_for(n: int) -> type:
    return np.uint32 if n < 2**32 else np.uint64


def _save_csr(folder: Path, name: str, off: np.ndarray, nbr: np.ndarray, w: np.ndarray, types: np.ndarray,
              dtype: type) -> None:
    """A CSR table over the vocabulary, stored over the local ids (rows of unused tokens are empty)."""
    local_off = np.append(off[types], off[-1])
    np.save(folder / f"{name}_off.npy", local_off.astype(_uint_for(int(off[-1]) + 1)))
    np.save(folder / f"{name}_ids.npy", nbr.astype(dtype))
    np.save(folder / f"{name}_w.npy", w.astype(np.float16))


def link_table(tokens: np.ndarray, vocab: int, k: int, distances: list[int], name: str = "links",
               chunk: int = 2_000_000, min_weight: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays (offsets[V+1], neighbour ids, weights) of the top-k links a → t, weight Σ 1/distance,
    normalized by a's total so that next-token links read as P(t | a); links whose summed weight is not above
    `min_weight` are dropped (the total still counts them). Chunked so memory stays bounded."""
    keys_parts: list[np.ndarray] = []
    w_parts: list[np.ndarray] = []
    n = len(tokens)
    for start in progress.track(range(0, n, chunk), f"{name} links", total=(n + chunk - 1) // chunk):
        ks, ws = [], []
        for d in distances:
            a = tokens[start : min(start + chunk, n - d)]
            if len(a) == 0:
                continue
            t = tokens[start + d : start + d + len(a)]
            ks.append(a * vocab + t)
            ws.append(np.full(len(a), 1.0 / d))
        if ks:
            keys_parts.append(np.concatenate(ks))
            w_parts.append(np.concatenate(ws))
            _merge(keys_parts, w_parts)
    if keys_parts:
        _merge(keys_parts, w_parts, force=True)
        keys, wsum = keys_parts[0], w_parts[0]
    else:
        keys, wsum = np.zeros(0, np.int64), np.zeros(0)
    src, dst = keys // vocab, keys % vocab
    row_total = np.bincount(src, weights=wsum, minlength=vocab)
    order = np.lexsort((-wsum, src))  # by source, strongest first
    src, dst, wsum = src[order], dst[order], wsum[order]
    first = np.searchsorted(src, np.arange(vocab))
    keep = ((np.arange(len(src)) - first[src]) < k) & (wsum > min_weight)
    src, dst, wsum = src[keep], dst[keep], wsum[keep]
    off = np.zeros(vocab + 1, np.int64)
    off[1:] = np.cumsum(np.bincount(src, minlength=vocab))
    return off, dst, wsum / row_total[src]


def semantic_table(present: np.ndarray, model_spec: str, k: int, chunk: int = 1024
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR top-k cosine neighbours among the tokens `present` in the corpus, from the model's input
    embedding (read from its checkpoint; no forward pass)."""
    from glassbox.checkpoint import open_checkpoint

    with open_checkpoint(model_spec) as ckpt:
        names = [n for n in ckpt.tensors if n.endswith("embed_tokens.weight") or n.endswith("wte.weight")]
        if not names:
            raise BadInput("no input embedding found for semantic neighbours (use --no-semantic)", model_spec)
        emb = ckpt.tensor(names[0]).float().numpy()
    vocab = emb.shape[0]
    present = present[present < vocab]
    e = emb[present]
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-8)
    k = min(k, len(present) - 1)
    src, dst, ws = [], [], []
    for i in progress.track(range(0, len(present), chunk), "semantic neighbours",
                            total=(len(present) + chunk - 1) // chunk):
        sims = e[i : i + chunk] @ e.T
        np.fill_diagonal(sims[:, i : i + chunk], -np.inf)  # not one's own neighbour
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        rows = np.arange(len(top))[:, None]
        order = np.argsort(-sims[rows, top], axis=1)
        top = top[rows, order]
        src.append(np.repeat(present[i : i + chunk], k))
        dst.append(present[top].ravel())
        ws.append(np.clip(sims[rows, top], 0.0, None).ravel())
    src_a, dst_a, w_a = (np.concatenate(x) if x else np.zeros(0) for x in (src, dst, ws))
    off = np.zeros(vocab + 1, np.int64)
    off[1:] = np.cumsum(np.bincount(src_a.astype(np.int64), minlength=vocab))
    return off, dst_a.astype(np.int64), w_a


def _merge(keys_parts: list[np.ndarray], w_parts: list[np.ndarray], force: bool = False) -> None:
    """Sum weights of equal keys across parts (in place), once parts are many or at the end."""
    if len(keys_parts) < 4 and not force:
        return
    keys = np.concatenate(keys_parts)
    ws = np.concatenate(w_parts)
    uniq, inv = np.unique(keys, return_inverse=True)
    keys_parts[:] = [uniq]
    w_parts[:] = [np.bincount(inv, weights=ws)]


class Index:
    """A built index, memory-mapped. Lookups read only the slices they need."""

    def __init__(self, path: str | Path):
        self.path = fileio.restore_dir(path)  # the old index, if a build died between its two renames
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise BadInput("not an overlay index (no meta.json); build one with `glassbox overlay build`", path)
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise BadInput(f"meta.json is not valid JSON: {exc}", meta_path) from None
        if self.meta.get("format") != FORMAT:
            raise BadInput(f"unknown index format {self.meta.get('format')!r} (expected {FORMAT})", meta_path)
        self.vocab_size = int(self.meta["vocab_size"])
        self.sep = int(self.meta["sep"])
        self.id = str(self.meta["id"])
        arrays = {}
        for name in ARRAYS:
            f = self.path / f"{name}.npy"
            if f.exists():
                try:
                    # a plain ndarray view of the map: same bytes, none of np.memmap's per-slice overhead
                    arrays[name] = np.load(f, mmap_mode="r").view(np.ndarray)
                except ValueError as exc:
                    raise BadInput(f"unreadable array: {exc}", f) from None
            elif name not in OPTIONAL:
                raise BadInput(f"index is missing {f.name}", self.path)
        self.tokens = arrays["tokens"]
        self.types = np.asarray(arrays["types"], dtype=np.int64)
        cum = np.asarray(arrays["cum"], dtype=np.int64)
        self.unigram = np.zeros(self.vocab_size, np.float64)  # dense in memory (cheap), local on disk
        self.unigram[self.types] = np.diff(cum)
        self.local = np.full(self.vocab_size, -1, np.int64)
        self.local[self.types] = np.arange(len(self.types))
        self.next = (arrays["next_off"], arrays["next_ids"], arrays["next_w"])
        self.cooc = (arrays["cooc_off"], arrays["cooc_ids"], arrays["cooc_w"])
        self.sa = Packed(arrays["sa"]) if "sa" in arrays else None
        self.semantic = (arrays["sem_off"], arrays["sem_ids"], arrays["sem_w"]) if "sem_off" in arrays else None
        self.n_tokens = len(self.tokens)
        self.ngram = (NGram(self.tokens, self.sa, self.types, cum, arrays, self.meta.get("discounts", {}),
                            int(self.meta.get("cap", 256)), self.vocab_size) if self.sa is not None else None)
        # the table's base distribution P_0 over the whole vocabulary (add-1/2 unigram; see overlay/ngram.py)
        self.p0 = (self.unigram + 0.5) / (self.unigram.sum() + 0.5 * self.vocab_size)
        self._feedback, self.consolidated_upto = self._load_feedback()

    # -- link tables -------------------------------------------------------------------------------
    def links(self, kind: str, a: int) -> tuple[np.ndarray, np.ndarray]:
        """(neighbour ids, weights) of token a in the 'next', 'cooc' or 'semantic' table."""
        table = {"next": self.next, "cooc": self.cooc, "semantic": self.semantic}[kind]
        if table is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        off, ids, w = table
        j = int(self.local[a]) if 0 <= a < self.vocab_size else -1
        if j < 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        lo, hi = int(off[j]), int(off[j + 1])
        return np.asarray(ids[lo:hi], dtype=np.int64), np.asarray(w[lo:hi], dtype=np.float32)

    # -- suffix array ------------------------------------------------------------------------------
    def find(self, pattern: list[int]) -> tuple[int, int]:
        """SA range [lo, hi) of the corpus positions where `pattern` occurs."""
        sa, toks, n = self.sa, self.tokens, len(pattern)
        p = tuple(pattern)
        lo, hi = 0, len(sa)
        while lo < hi:  # first suffix whose first n tokens are >= p
            mid = (lo + hi) // 2
            s = int(sa[mid])
            if tuple(toks[s : s + n].tolist()) < p:
                lo = mid + 1
            else:
                hi = mid
        first, hi = lo, len(sa)
        while lo < hi:  # first suffix whose first n tokens are > p
            mid = (lo + hi) // 2
            s = int(sa[mid])
            if tuple(toks[s : s + n].tolist()) <= p:
                lo = mid + 1
            else:
                hi = mid
        return first, lo

    def longest_match(self, context: list[int], max_len: int = 12) -> tuple[int, int, int]:
        """(L, lo, hi): the longest suffix of `context` (L <= max_len) found in the corpus; L=0 if none."""
        if self.sa is None or not context:
            return 0, 0, 0
        best = (0, 0, 0)
        lo_len, hi_len = 1, min(max_len, len(context))
        while lo_len <= hi_len:  # a match of length L implies matches of every shorter length
            mid = (lo_len + hi_len) // 2
            a, b = self.find(context[-mid:])
            if b > a:
                best = (mid, a, b)
                lo_len = mid + 1
            else:
                hi_len = mid - 1
        return best

    # -- consolidated feedback ---------------------------------------------------------------------
    def _load_feedback(self) -> tuple[dict[tuple[int, int], dict[int, float]], int]:
        """feedback.npz holds the rows and the last feedback id they include, in one atomic file."""
        f = self.path / "feedback.npz"
        table: dict[tuple[int, int], dict[int, float]] = {}
        if not f.exists():
            return table, 0
        with np.load(f) as z:
            for a, b, t, w in z["rows"].tolist():
                row = table.setdefault((int(a), int(b)), {})
                row[int(t)] = row.get(int(t), 0.0) + w
            return table, int(z["upto"])

    def feedback_links(self, a: int, b: int) -> dict[int, float]:
        """Consolidated feedback for the context (a, b) → {token: weight}."""
        return self._feedback.get((a, b), {})

    def bytes_per_token(self) -> float:
        total = sum(f.stat().st_size for f in self.path.glob("*.npy"))
        return total / max(1, self.n_tokens)

    def sizes(self) -> dict[str, dict[str, float]]:
        """{group: {bytes, bytes_per_token}} of the index's arrays (what `overlay build` prints)."""
        out: dict[str, dict[str, float]] = {}
        for f in sorted(self.path.glob("*.npy")):
            stem = f.stem
            key = "h" if stem[0] == "h" and stem[1:2].isdigit() else stem.split("_")[0]
            g = out.setdefault(SIZE_GROUPS.get(key, stem), {"bytes": 0, "bytes_per_token": 0.0})
            g["bytes"] += f.stat().st_size
        for g in out.values():
            g["bytes_per_token"] = g["bytes"] / max(1, self.n_tokens)
        return out

    def gate(self) -> dict | None:
        """The mixing gate fitted by `overlay eval --save-gate` (overlay/gate.py), if any."""
        f = self.path / "gate.json"
        if not f.exists():
            return None
        try:
            d = json.loads(f.read_text())
        except json.JSONDecodeError as exc:
            raise BadInput(f"gate.json is not valid JSON: {exc}", f) from None
        if not isinstance(d, dict):
            raise BadInput("gate.json is not a JSON object", f)
        # version 1: the static gate alone; version 2 adds the session part (overlay/mixer.py reads both)
        keys = ("w", "b", "shipped", "features", "report", "version", "kind", "table", "session")
        gate = {k: d[k] for k in keys if k in d}
        from glassbox.overlay.mixer import Mixer

        try:
            Mixer.from_json(gate)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"gate.json is not a mixing gate ({type(exc).__name__}: {exc})", f) from None
        return gate

    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer"


def write_feedback(index_path: Path, rows: list[tuple[int, int, int, float]], upto: int) -> None:
    """Replace the index's consolidated feedback with `rows` (a, b, t, weight), which include every
    feedback id <= upto; one atomic file, so a crash never applies a row twice."""
    from glassbox.fileio import atomic_write

    arr = np.array(sorted(rows), dtype=np.float64).reshape(-1, 4)
    with atomic_write(Path(index_path) / "feedback.npz") as f:
        np.savez(f, rows=arr, upto=np.int64(upto))


def write_gate(index_path: str | Path, gate: dict) -> None:
    """Store a fitted mixing gate in the index (one atomic file)."""
    from glassbox.fileio import atomic_write

    with atomic_write(Path(index_path) / "gate.json", "w") as f:
        f.write(json.dumps(gate, indent=1))
