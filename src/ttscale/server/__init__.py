"""The OpenAI-compatible server behind ``ttscale serve`` (needs the ``server`` extra).

Build it with :func:`ttscale.server.app.create_app` from a
:class:`ttscale.server.config.ServerConfig`. Nothing is imported here, so that
importing the CLI does not import FastAPI.
"""
