"""Exit codes a shell script can act on."""

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_GATE, EXIT_CANCELLED = 0, 1, 2, 3, 130
