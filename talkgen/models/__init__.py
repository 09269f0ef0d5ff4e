"""Model loading (safe by default), layer introspection and the bundled sample models."""

from talkgen.models.loading import load_model, load_weights_into
from talkgen.models.samples import SAMPLES, load_sample

__all__ = ["load_model", "load_weights_into", "SAMPLES", "load_sample"]
