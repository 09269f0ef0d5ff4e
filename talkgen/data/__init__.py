"""Data sets: bundled ones by name, and the user's own (.npz or a tensor dict)."""

from talkgen.data.bundled import BUNDLED, load_bundled
from talkgen.data.user import load_user_data

__all__ = ["BUNDLED", "load_bundled", "load_user_data"]
