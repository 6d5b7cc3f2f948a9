"""Shipped spec files (package data)."""
