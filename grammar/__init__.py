"""dslrun grammar files (package data)."""
