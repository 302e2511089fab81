"""The programs: the daemon (composition root), one-shot commands, the CLI, output for people.
Crash invariant: a writing command holds the state lock and first finishes what an
interrupted run left (`runtime.prepare`; `undo` an interrupted undo) before new work.
"""
