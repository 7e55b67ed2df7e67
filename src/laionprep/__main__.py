"""``python -m laionprep VERB ...``: the ``laionprep`` command, for environments where the script is not on PATH."""
import sys

from laionprep.cli import main

if __name__ == "__main__":
    sys.exit(main())
