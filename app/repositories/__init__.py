"""Repositories: every SQL query of the service lives here, and every query filters by owner."""
