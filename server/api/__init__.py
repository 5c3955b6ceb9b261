"""REST route modules by area, each with its ``ROUTES`` table (server/rest.py joins them)."""
