"""`python -m glassbox` is the same as the `glassbox` command."""

from glassbox.cli import main

main()
