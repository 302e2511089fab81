"""`python -m daemon` is `mediasortd`."""

import sys

from .app.cli import main

sys.exit(main())
