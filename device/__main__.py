"""`python -m device` runs the affectbox command line."""

from device.cli import main

raise SystemExit(main())
