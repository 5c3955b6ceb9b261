"""REST route modules by area; each has a ``ROUTES`` table (server/rest.py joins them)."""
