"""Subscribers: the store, signed tokens, imports and exports."""
