"""`glassbox demo` (what `make demo` runs): the main job on the bundled default model, end to end, said in a
few lines; the details go into one offline report that opens on the tour.

1. anatomy: the checkpoint mapped from the mathematics to the bytes;
2. atlas: what each head of the real model does, proved by ablation, with a heatmap;
3. training: a small model trained from its declaration, and the step where its induction head is born;
4. the tour (glassbox.tour): the three chapters on the atlas's top induction head;
5. the report and the web app.
"""

from __future__ import annotations

from pathlib import Path

import typer

from glassbox.run import options


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    model: str = typer.Option("smollm2-135m", "--model", help="Bundled model name or checkpoint path."),
    out: str = typer.Option("out/demo", "--out", help="Where pictures and JSON go."),
    seed: int = typer.Option(0, "--seed"),
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    max_memory: str | None = options.MAX_MEMORY,
) -> None:
    """Anatomy, head atlas, a training run and the tour on the bundled model: a short summary, one report.

    Everything else goes into one offline report that opens on the tour."""
    import sys
    import time

    from rich.console import Console

    from glassbox import bundled
    from glassbox.anatomy import describe
    from glassbox.checkpoint import open_checkpoint
    from glassbox.guide import summary, walk
    from glassbox.heads.atlas import Settings, build_atlas
    from glassbox.heads.render import save as save_atlas
    from glassbox.heads.render import top_heads
    from glassbox.run import load_model
    from glassbox.web.documents import store_atlas

    console = Console() if sys.stdout.isatty() else Console(width=200, soft_wrap=True)
    folder, path = Path(out), bundled.resolve(model)
    t0 = time.perf_counter()
    with open_checkpoint(model) as checkpoint:
        anatomy = describe(checkpoint)
        console.print(f"1. anatomy: {model} is {checkpoint.format}, {anatomy.architecture}, "
                      f"{anatomy.n_parameters:,} parameters in {len(anatomy.tensors)} tensors, "
                      f"{sum(len(t.heads) for t in anatomy.tensors)} head slices with byte ranges "
                      f"(glassbox anatomy {model})", markup=False, highlight=False)

    loaded = load_model(model)
    atlas = build_atlas(loaded, Settings(seed=seed))
    png = save_atlas(atlas, folder / "atlas")
    store_atlas(path, atlas)
    roles = len(top_heads(atlas))
    console.print(f"2. atlas: {sum(1 for h in atlas['heads'] for r in h['roles'] if r['validated'])} validated "
                  f"(head, role) pairs over {roles} roles ({png}; the table: glassbox atlas {model})",
                  markup=False, highlight=False)

    console.print("3. training: " + training_summary(folder / "train", seed=seed).split("\n", 1)[0],
                  markup=False, highlight=False)

    doc = walk(model, path, None, folder / "train", None, folder / "tour", seed, quiet=True, loaded=loaded,
               atlas=atlas)
    console.print("4. the tour:\n" + "\n".join("   " + line for line in summary(doc).splitlines()),
                  markup=False, highlight=False)
    console.print(f"5. {see_it(model, atlas, folder, doc)}", markup=False, highlight=False)
    console.print(f"({time.perf_counter() - t0:.0f} s; the whole tour in the console: glassbox tour {model})",
                  markup=False, highlight=False)


def see_it(model: str, atlas: dict, out: Path, tour: dict | None = None) -> str:
    """Cache the atlas (so `glassbox serve` opens it at once) and write the report of the model and the run,
    opening on the tour when there is one."""
    from glassbox import bundled
    from glassbox.report import build_report
    from glassbox.web.documents import store_atlas

    store_atlas(bundled.resolve(model), atlas)
    specs = [model] + ([str(out / "train")] if (out / "train" / "metrics.parquet").exists() else [])
    report = build_report(specs, out / "report.html", atlas=atlas, tour=tour)
    return (f"report (one self-contained file, works offline): {report} ({report.stat().st_size / 2**20:.1f} MiB)\n"
            f"browse it live:  glassbox serve {' '.join(specs)}   → http://127.0.0.1:8765/")


def training_summary(out_dir: str | Path, seed: int = 0) -> str:
    """Train the induction preset into out_dir (unless it is there), run its timeline → lines naming the phase change."""
    import time

    from glassbox.timeline.analyze import analyze
    from glassbox.timeline.plots import plot_runs
    from glassbox.train.loop import declare, train
    from glassbox.train.store import read_table

    out = Path(out_dir)
    t0 = time.perf_counter()
    if not (out / "summary.json").is_file():
        train(out, declare(preset="induction-2l", seed=seed))
    doc = analyze(out)
    png = plot_runs([doc], [read_table(out, "metrics")], out / "timeline.png")
    seconds = time.perf_counter() - t0
    lines = [f"trained GPT-2 (2 layers × 2 heads, attention only) on repeated random tokens, seed {seed}: "
             f"{doc['steps']} steps, {seconds:.1f} s with the timeline"]
    ind = [c for c in doc["phase_changes"] if c["role"] == "induction"]
    for c in ind:
        lines.append(f"  phase change: L{c['layer']}H{c['head']} becomes an induction head at step {c['step']} "
                     f"(score {c['before']:.2f} → {c['after']:.2f})")
    for lc in doc["loss_changes"]:
        if lc["metric"] == "loss_repeated":
            lines.append(f"  loss on the repeated part: {lc['before']:.2f} → {lc['after']:.2f} nats, "
                         f"dropping at step {lc['step']}")
    if not ind:
        lines.append("  no induction phase change detected")
    prev = doc["final"]["top_heads"]["previous_token"]
    lines.append(f"  top previous-token head: L{prev['layer']}H{prev['head']} (score {prev['score']:.2f})")
    lines.append(f"  plot: {png}")
    return "\n".join(lines)
