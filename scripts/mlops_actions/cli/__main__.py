"""`python -m mlops_actions.cli`, as the old single-module cli.py allowed."""

import sys

from . import main

sys.exit(main())
