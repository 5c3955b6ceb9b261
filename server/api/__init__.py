"""REST route modules by area; each exports ROUTES."""
