"""The HTTP front: a Flask app factory."""

from antihack.api.app import create_app

__all__ = ["create_app"]
