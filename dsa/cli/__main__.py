"""``python -m dsa.cli``: the ``dsa`` script."""
import sys

from dsa.cli import main

sys.exit(main())
