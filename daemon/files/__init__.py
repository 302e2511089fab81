"""The filesystem: descriptor-relative paths, durable copies, no-replace moves, fsync."""
