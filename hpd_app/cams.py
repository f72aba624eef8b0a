"""CAM overlays for the page, on a proxy of the UI's own (never the one the engine's distance is using:
grad-cam hooks and eval() on a module shared with a running step would corrupt that step)."""
from __future__ import annotations

import copy
import threading

import numpy as np

from engine import cam_heatmaps, dataset_info, load_classifier, overlay


class CamProvider:
    """Loads one proxy per classifier spec on first use and serialises CAM calls (hooks are per module)."""

    def __init__(self, given_classifier=None):
        self._given = copy.deepcopy(given_classifier) if given_classifier is not None else None
        self._proxies: dict[str, object] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def _proxy(self, spec: str):
        if self._given is not None:
            return self._given
        if spec in self._errors:
            raise ValueError(self._errors[spec])
        if spec not in self._proxies:
            try:
                self._proxies[spec] = load_classifier(spec, "cpu")
            except Exception as exc:  # a missing asset: remember it rather than retry on every poll
                self._errors[spec] = str(exc)
                raise ValueError(str(exc)) from None
        return self._proxies[spec]

    def overlays(self, images, labels, spec: str, dataset: str) -> list[np.ndarray]:
        """RGB uint8 overlays of normalised images; raises ValueError when no proxy can be loaded."""
        info = dataset_info(dataset)
        with self._lock:
            proxy = self._proxy(spec)
            maps = cam_heatmaps(proxy, info.to_generator(images.float()), labels)
        return overlay(info.denormalize(images.float()).clamp(0, 1), maps)
