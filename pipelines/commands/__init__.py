"""Command modules of the xmargin CLI, one per area."""
