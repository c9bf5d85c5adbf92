"""`broker relay`: copies OS2mo's events into the broker's `mo` namespace, at least once."""
