"""Turning configuration mistakes into one clear line: the key, the bad value and what is expected."""

from __future__ import annotations

import dataclasses
import re

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from train.config import ConfigError


class InvalidConfig(ValueError):
    """A configuration that cannot run. ``str()`` is the single line shown to the user."""


def from_config_error(error: ConfigError, prefix: str) -> InvalidConfig:
    key = f"{prefix}.{error.field}" if prefix else error.field
    return InvalidConfig(f"{key}={error.value!r} is invalid: expected {error.expected}")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


_CONVERSION = re.compile(r"Value '(?P<value>.*)' of type '\w+' could not be converted to (?P<type>\w+)")
_TYPE_NAMES = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}


def from_omegaconf_error(error: OmegaConfBaseException, prefix: str = "") -> InvalidConfig:
    """OmegaConf's multi-line messages, reduced to ``key=value is invalid: expected ...``."""
    full_key = str(getattr(error, "full_key", "") or "")
    # Errors on nodes still attached to the root already carry the full path.
    key = full_key if prefix and full_key.startswith(f"{prefix}.") else ".".join(p for p in (prefix, full_key) if p)
    reason = _first_line(str(getattr(error, "msg", "") or str(error)))
    object_type = getattr(error, "object_type", None)
    if isinstance(error, ConfigKeyError | ConfigAttributeError):
        if isinstance(object_type, type) and dataclasses.is_dataclass(object_type):
            known = ", ".join(field.name for field in dataclasses.fields(object_type))
            return InvalidConfig(f"{key} is not an option of {object_type.__name__}: expected one of {known}")
        return InvalidConfig(f"{key} is not a known key: check its spelling, or add a new key with +{key}=...")
    conversion = _CONVERSION.match(reason)
    if conversion:
        expected = _TYPE_NAMES.get(conversion["type"], conversion["type"])
        return InvalidConfig(f"{key}={conversion['value']!r} is invalid: expected {expected}")
    return InvalidConfig(f"{key}: {reason}" if key else reason)


def from_hydra_error(error: Exception) -> InvalidConfig:
    """Hydra's composition errors (unknown group option, bad override, unknown key) as one line."""
    if isinstance(error, MissingConfigException):
        missing = error.missing_cfg_file or ""
        if "/" in missing and error.options:
            group, option = missing.rsplit("/", 1)
            return InvalidConfig(
                f"{group}={option} is not an available option: expected one of {', '.join(sorted(error.options))}"
            )
        return InvalidConfig(_first_line(str(error)))
    cause = error.__cause__ or error.__context__
    if isinstance(cause, OmegaConfBaseException):
        return from_omegaconf_error(cause)
    if isinstance(error, ConfigCompositionException | OverrideParseException):
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        return InvalidConfig("; ".join(lines[:2]))
    if isinstance(error, OmegaConfBaseException):
        return from_omegaconf_error(error)
    return InvalidConfig(_first_line(str(error)))
