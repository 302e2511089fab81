"""Pure rules: names in the library, companions, dates and retries. No I/O;
imports nothing of ours but model and errors."""
