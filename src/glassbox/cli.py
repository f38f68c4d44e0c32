"""The `glassbox` command line: one Typer app; each area of the package registers its own commands.

Every command follows the contract in shared/design.md: exit 2 and one `error: ...` line on bad input,
`--json` prints exactly one JSON document on stdout, progress bars only on a terminal and never with --quiet.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

try:  # typer ≥0.20 vendors click; older releases use the click package
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc

from glassbox import progress
from glassbox.errors import BadInput
from glassbox.run import options

app = typer.Typer(
    name="glassbox",
    help="See where a transformer's knowledge sits: checkpoint anatomy, head atlas, training, lenses, overlay.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module exposes `register(app)`. Imports of torch/transformers stay inside the commands,
# so `glassbox anatomy` starts fast.
COMMAND_MODULES = [
    "glassbox.anatomy.commands",
    "glassbox.heads.commands",
    "glassbox.demo",
    "glassbox.guide",
    "glassbox.train.commands",
    "glassbox.timeline.commands",
    "glassbox.lens.commands",
    "glassbox.overlay.commands",
    "glassbox.circuits.commands",
    "glassbox.web.commands",
    "glassbox.report.commands",
    "glassbox.facts.commands",
]


@app.callback()
def _root(quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.")) -> None:
    progress.set_quiet(quiet)


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def _hoist_quiet(argv: list[str]) -> list[str]:
    """Accept --quiet anywhere on the line (the contract puts it on every subcommand)."""
    flags = [a for a in argv if a in ("--quiet", "-q")]
    rest = [a for a in argv if a not in ("--quiet", "-q")]
    return flags[:1] + rest


def main(argv: list[str] | None = None) -> None:
    args = _hoist_quiet(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, prog_name="glassbox", standalone_mode=False)
    except BadInput as exc:
        _fail(str(exc), 2)
    except click_exc.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help())
        sys.exit(0)
    except click_exc.UsageError as exc:
        _fail(exc.format_message().replace("\n", " "), 2)
    except click_exc.ClickException as exc:
        _fail(exc.format_message().replace("\n", " "), 2)
    except typer.Abort:
        _fail("aborted", 130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except MemoryError:
        _fail("out of memory", 2)
    except Exception as exc:  # a bug of ours: one line, and the traceback only when asked for
        if os.environ.get("GLASSBOX_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set GLASSBOX_DEBUG=1 for a traceback)", 1)
    finally:
        options.reset()  # --dtype/--device/--max-memory hold for one command (in-process callers share the process)
    sys.exit(0)


def _fail(message: str, code: int) -> None:
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
