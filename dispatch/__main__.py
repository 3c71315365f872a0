"""``python -m dispatch``: the same as the ``dispatch`` console script."""

from dispatch.cli import main

raise SystemExit(main())
