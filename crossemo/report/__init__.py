"""Turning results into what people read: the study's tables (and, later, a page)."""
