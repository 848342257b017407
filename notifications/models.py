"""Models of notifications (filled in by its issue)."""
