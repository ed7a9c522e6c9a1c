"""Exit codes a shell script can act on."""

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_GATE, EXIT_CANCELLED = 0, 1, 2, 3, 130
# the service commands (distillery jobs / artifacts): a job that failed for another reason than its gates, an
# object the key cannot see, a missing or refused key, a state conflict (cancelling a finished job), a service
# that cannot be reached or stays unavailable after retries, a wait that ran out, a download that did not verify
EXIT_JOB_FAILED, EXIT_NOT_FOUND, EXIT_UNAUTHORIZED, EXIT_CONFLICT, EXIT_UNAVAILABLE = 4, 5, 6, 7, 8
EXIT_TIMEOUT, EXIT_CHECKSUM = 9, 10
