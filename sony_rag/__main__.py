"""``python -m sony_rag``: the same as the ``sony-rag`` command."""

import sys

from sony_rag.cli import main

if __name__ == "__main__":
    sys.exit(main())
