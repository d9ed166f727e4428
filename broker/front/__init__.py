"""The HTTP front of ``drbroker serve``: no slow or idle client can take the request threads.

gunicorn stays the process manager; its worker class (``worker.FrontWorker``) serves the listening sockets
with waitress, which reads each request whole on an event loop before a request thread takes it. On top of
waitress: total deadlines for headers and body, a connection cap that drops idle connections first, OSB JSON
for every answer the front gives itself, and TLS on the same loop (docs/security.md, "Hard edges and TLS").
"""
