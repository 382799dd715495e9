"""Layer ``base``: knows nothing of LMCache, git or HTTP.

The one error tree, located config issues, YAML with marks, log lines and
redaction, guarded tasks and single threads. Imports nothing of the server.
"""
