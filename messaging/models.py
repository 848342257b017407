"""Models of messaging (filled in by its issue)."""
