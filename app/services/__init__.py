"""Services: the use cases behind the routes (validation, transactions, enqueueing after commit)."""
