"""The relay's web pages: the status page at GET / and its static files."""
