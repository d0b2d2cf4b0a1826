"""rejection_sampling package."""
