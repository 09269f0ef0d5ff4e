"""The analyses: one module per analysis, each registering its class with ``@register``.

Modules are discovered (``talkgen.analyses.base.registry``), not listed here: a new analysis is one
module in this folder plus its commentary template. Each declares its section of the talk and its
``order`` within it; importing this package imports none of them.
"""
