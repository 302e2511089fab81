"""The programs: the daemon (composition root), one-shot commands, the CLI, output for people."""
