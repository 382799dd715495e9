"""Layer ``config``: the config-repository language and its answers, as pure immutable values.

Names and layout (``names``), the LMCache schema (``schema``), one file's
parse (``parser``) and a whole tree's load (``loader``) from a source
(``sources``), what would otherwise go unnoticed (``hints``), the snapshot of
one commit and the answers it gives (``snapshot``), views and diffs of apps
(``views``) and why rules apply (``explain``). Never imports asyncio, GitPython,
aiohttp or ``Settings``; reads files only through a source it is handed. May
import ``base``.
"""
