"""``python -m dsa``: the ``dsa`` script."""
import sys

from dsa.cli import main

sys.exit(main())
