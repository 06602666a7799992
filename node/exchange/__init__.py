"""Encrypted Arrow shares between nodes: envelope v1, receiving, receipts, the Exchange service."""
