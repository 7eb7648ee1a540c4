"""Certificate lookup: which directory serves a domain, fetching and validating what it
returns, and the shared-memory certificate cache that crypto workers read (`cache`)."""
