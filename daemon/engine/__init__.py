"""The work: the steps that take a file from the inbox into the library, pairing, undo."""
