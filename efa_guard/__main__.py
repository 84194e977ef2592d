"""`python -m efa_guard` runs the command line."""

from efa_guard.cli import main

raise SystemExit(main())
