"""Layer ``base``: knows nothing of LMCache, git or HTTP.

The one error tree, located config issues, YAML with marks, log lines and
redaction, guarded tasks and single threads, the cycle collector kept off a
build's way. Imports nothing of the server.
"""
