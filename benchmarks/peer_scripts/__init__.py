"""Scripts the peers run in their own virtual environments (they import nothing of ours)."""
