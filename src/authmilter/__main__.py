"""`python -m authmilter ...`: the console script's entry point, for venvs without bin/ on PATH."""
import sys

from authmilter.cli import main

# Guarded: the daemon imports every module of the package before dropping privileges,
# and importing this one must not run a second command line.
if __name__ == "__main__":
    sys.exit(main())
