"""`python -m hub` is `affectbox-hub`."""

from hub.cli import main

raise SystemExit(main())
