"""Models of campaigns (filled in by its issue)."""
