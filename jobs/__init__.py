"""Background jobs: imports now; generation and automation workers later (arq)."""
