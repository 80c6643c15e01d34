"""Persistence behind the Store protocol."""
