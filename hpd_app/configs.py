"""User input (a JSON object or form values named like the CLI flags) -> a validated RunConfig.

Everything that can be told without the device is told here, before a run is queued: types (no bool
for a number, no NaN), ranges and ceilings (RunConfig), that the device exists, that the generator and
classifier files exist and are readable files of a supported kind, and that the run fits the device's
memory when its generator is at hand (injected or embedded; a StyleGAN-XL file is measured when the
run loads it, before it allocates anything).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from dataclasses import fields

from engine import RunConfig, resolve_device
from engine.classifiers.registry import check_classifier_spec
from engine.data import DATASETS, dataset_info
from engine.generators import PixelGenerator, load_generator
from engine.generators.loader import EMBEDDED_PREFIX, check_generator_spec
from engine.run.limits import check_device, check_memory
from engine.run.methods import get_method

_FIELDS = {f.name: f for f in fields(RunConfig)}
MAX_CONFIG_CHARS = 20_000      # a config is a few hundred characters; anything longer is refused unread
MAX_STRING_CHARS = 4096        # paths and names
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _kind(name: str) -> str:
    return str(_FIELDS[name].type).split("|")[0].strip()


def _coerce(name: str, value):
    """Form widgets and JSON give strings, floats for ints, '' for unset; make them the field's type,
    refusing what only looks like it (true for a number, 1.5 for a count, "nan", 1e999)."""
    if value is None or value == "":
        return None
    kind = _kind(name)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if kind == "int":
        number = _number(name, value, "a whole number")
        if isinstance(number, float):
            if not number.is_integer():
                raise ValueError(f"{name} must be a whole number, got {value!r}")
            number = int(number)
        return number
    if kind == "float":
        return float(_number(name, value, "a number"))
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > MAX_STRING_CHARS:
        raise ValueError(f"{name} is longer than {MAX_STRING_CHARS} characters")
    return value


def _number(name: str, value, what: str) -> int | float:
    """An int or a finite float from a JSON number or a string; bools and non-finite values refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{name} must be {what}, got {text[:40]!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if isinstance(value, int) and what == "a number" and abs(value) > 1e300:
        raise ValueError(f"{name} is out of range, got a {len(str(abs(value)))}-digit number")
    return value


def config_values(values: dict | str) -> dict:
    """A request's config as a dict: JSON text parsed within bounds; ValueError (one sentence) otherwise."""
    if isinstance(values, str):
        if len(values) > MAX_CONFIG_CHARS:
            raise ValueError(f"the config is longer than {MAX_CONFIG_CHARS} characters")
        try:
            values = json.loads(values or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"the config is not valid JSON ({exc.msg} at character {exc.pos})") from None
        except RecursionError:
            raise ValueError("the config is not a flat JSON object (it nests too deeply)") from None
    if not isinstance(values, dict):
        raise ValueError("the config must be a JSON object of RunConfig fields, e.g. {\"method\": \"hpd\", \"ipc\": 1}")
    return values


def parse_config(values: dict | str, data_root: str | None = None) -> RunConfig:
    """Missing fields take RunConfig's defaults (device: CUDA when available); raises ValueError with the fix."""
    values = config_values(values)
    unknown = sorted(str(k)[:40] for k in set(values) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown config field(s) {', '.join(unknown[:5])}; valid fields: {', '.join(_FIELDS)}")
    clean = {k: v for k, v in ((k, _coerce(k, v)) for k, v in values.items()) if v is not None}
    if data_root and "data_root" not in clean:
        clean["data_root"] = data_root
    # A named device must exist here (cuda:7 on a one-GPU machine, meta: refused); none means the default.
    clean["device"] = str(check_device(clean["device"]) if "device" in clean else resolve_device(None))
    return RunConfig(**clean)


def _check_data_root(config: RunConfig) -> None:
    """The dataset's folder must exist: found now, not when the run reaches the device after a queue."""
    root = Path(config.data_root) if config.data_root else Path(DATASETS[config.dataset].default_root)
    if not root.is_dir():
        raise ValueError(f"there is no {config.dataset} folder at {root}; set data_root to the folder that holds "
                         f"its files (python -m engine datasets --check lists what is present)")


class Prechecks:
    """The /start checks that need the generator or the file system; embedded generators are loaded
    (on the CPU, once) to measure the run against the device's memory."""

    def __init__(self, generator=None, classifier=None):
        self._generator, self._classifier = generator, classifier
        self._embedded: dict[str, object] = {}

    def check(self, config: RunConfig) -> None:
        _check_data_root(config)
        method = get_method(config.method)
        if method.uses_gan and self._generator is None:
            check_generator_spec(config.generator_spec)
        needs_proxy = config.distance and (config.classifier is not None or config.selection_basis == "distance")
        if needs_proxy and self._classifier is None:
            check_classifier_spec(config.classifier_spec)
        G = self._measurable_generator(config)
        if G is None:
            return
        info = dataset_info(config.dataset)
        if method.uses_gan and (G.resolution, G.channels) != (info.resolution, info.channels):
            raise ValueError(f"the generator makes {G.channels}x{G.resolution}px images but {info.name} "
                             f"is {info.channels}x{info.resolution}px")
        cuts = [group[0] for group in method.plan(config, len(G.layers))]  # a bad cut range is refused here
        check_memory(config, G, info.num_classes, info.channels, info.resolution, cuts)

    def _measurable_generator(self, config: RunConfig):
        if config.method == "pixel":
            info = dataset_info(config.dataset)
            return PixelGenerator(info.channels, info.resolution, info.num_classes, info.mean, info.std)
        if self._generator is not None:
            return self._generator
        spec = config.generator_spec
        if not spec.startswith(EMBEDDED_PREFIX):
            return None  # a StyleGAN-XL file: measured when the run loads it (before any allocation)
        if spec not in self._embedded:
            self._embedded[spec] = load_generator(spec, "cpu")
        return self._embedded[spec]
