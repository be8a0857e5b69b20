"""`synctalk serve`: live avatars over a WebSocket, file renders and background jobs, and a browser page.

Modules: `protocol` (message types and the binary frame layout), `features` (audio features computed
as the audio arrives), `avatar` (a loaded person: frames, boxes, generator), `worker` (one thread per
device that batches every session's ready frames), `session` (one viewer's stream), `jobs`
(preprocessing/training subprocesses and renders, one at a time), `app` (the HTTP/WebSocket server),
`command` (the command line). Nothing is imported here so `synctalk --help` stays fast.
"""
