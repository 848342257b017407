"""Models of analytics (filled in by its issue)."""
