"""The one exception a StyleGAN-XL checkpoint can raise while loading."""
from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint could not be loaded; the message is one sentence a user can act on."""
