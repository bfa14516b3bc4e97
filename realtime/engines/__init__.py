"""Engines: what hub nodes share. ``memory`` for one process, ``redis`` for many."""
