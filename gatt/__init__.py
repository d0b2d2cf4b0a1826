"""gatt package."""
