"""Drops events whose channel matches a pattern, or whose user is listed
(the Python twin of examples/filters/drop-by-channel).

    "filters": [{ "wasm": "filters/drop_by_channel_py.wasm",
                  "config": { "channels": ["debug-*", "*-internal"], "user_ids": ["bot"] } }]

Build: pip install ../../../sdk/python && hookline-filter-py build filter.py -o drop_by_channel_py.wasm
"""

from hookline_filter import retain

FIELDS = ("channels", "user_ids")


def _parse(config):
    given = {} if config is None else config
    if not isinstance(given, dict):
        raise ValueError("the config must be an object")
    for name in given:
        if name not in FIELDS:
            raise ValueError(f"unknown field `{name}`, expected `channels` or `user_ids`")

    def strings(name):
        value = given.get(name) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"`{name}` must be a list of strings")
        return value

    return strings("channels"), strings("user_ids")


def validate_config(config):
    channels, user_ids = _parse(config)
    if not channels and not user_ids:
        raise ValueError("set `channels` and/or `user_ids`, or this filter drops nothing")
    if "" in channels:
        raise ValueError('channel pattern "" is empty')


def filter(ctx, batch):
    channels, user_ids = _parse(ctx.config)
    return retain(
        batch,
        lambda e: not any(glob_match(p, e.channel) for p in channels) and e.user_id not in user_ids,
    )


def glob_match(pattern, text):
    """`*` matches any (possibly empty) run of characters; everything else is literal."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == text
    first, last = parts[0], parts[-1]
    if len(text) < len(first) + len(last) or not text.startswith(first) or not text.endswith(last):
        return False
    rest = text[len(first):len(text) - len(last)]
    for middle in parts[1:-1]:
        at = rest.find(middle)
        if at < 0:
            return False
        rest = rest[at + len(middle):]
    return True
