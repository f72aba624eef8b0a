"""H-PD Studio's Gradio page over the engine. Draws snapshots and sends commands; no engine logic here."""
from .app import build_app, launch_app

__all__ = ["build_app", "launch_app"]
