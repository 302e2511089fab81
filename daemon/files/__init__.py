"""The filesystem: descriptor-relative paths beneath the inbox, durable copies, no-replace
moves and removals by identity, folder fsync. Crash invariant: bytes are fsynced before
they are reported copied, and a move never leaves an entry in no place.
"""
