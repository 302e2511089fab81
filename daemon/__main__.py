"""`python -m daemon` is `mediasortd`."""

import sys

from .cli import main

sys.exit(main())
