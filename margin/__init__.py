"""xmargin package."""
