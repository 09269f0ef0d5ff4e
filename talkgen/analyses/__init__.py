"""Every analysis module, imported once so that its ``@register`` runs. Order = default order."""

from talkgen.analyses import model_card, weights  # noqa: F401
