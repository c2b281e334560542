"""The HTTP front: a Flask app factory."""

from api.app import create_app

__all__ = ["create_app"]
