"""Pure rules: names in the library, companions, dates, what a file is, and retries. No I/O,
so nothing to leave half-done; imports nothing of ours but model and errors.
"""
