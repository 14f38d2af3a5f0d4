"""Yes/no options as they reach the bundle's code from the command line.

``python -m monai.bundle run ... --resume false`` hands the config the string ``'false'``: the command line is parsed
by python-fire, which turns only the Python literals ``True`` / ``False`` into booleans, and any non-empty string is
true in Python. Every yes/no option a config exposes therefore goes through :func:`as_flag` where it is used.
"""

from __future__ import annotations

TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0"})


def as_flag(value: bool | int | str, name: str) -> bool:
    """``value`` of the option ``name`` as a bool: a bool, 0 / 1, or one of true/false, yes/no, on/off (any case).

    Raises:
        ValueError: for anything else, naming the option and the values it takes.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    word = value.strip().lower() if isinstance(value, str) else None
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ValueError(f"--{name} {value!r}: expected true or false (also yes/no, on/off, 1/0)")
