"""Fine-tuning a classifier (Lightning module and data)."""
