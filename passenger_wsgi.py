"""Entry point for LiteSpeed / Passenger: the WSGI callable `application`."""
from app import create_app

application = create_app()
