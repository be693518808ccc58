"""`python -m scripts.benchmarks`: what `scripts/bench` runs."""

import sys

from scripts.benchmarks.cli import main

sys.exit(main())
