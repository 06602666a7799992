"""Sharing agreements: signed documents, their store, and the access decisions built on them."""
