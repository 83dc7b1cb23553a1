"""Limits of the IGGT model that every layer checks against, in a module that imports nothing.

The configuration (which needs yaml) and the engines (which must not) both import it, so the number
lives in one place.
"""

MAX_VIEWS = 12
"""Images per forward pass the released IGGT supports (window.size x cameras)."""
