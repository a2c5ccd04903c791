"""`python -m ares_data.cli`: the same as the `ares` command."""

from . import main

main()
