"""Models of templates_app (filled in by its issue)."""
