"""The work: the steps that take a file from the inbox into the library, pairing, undo.
Crash invariant: each step's effect is durable before the journal row says so, and every
step looks at the disk first, so replay ("resume every unfinished job") finishes any crash.
"""
