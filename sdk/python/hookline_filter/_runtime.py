"""Inside the component: converts between the WIT world's types and the
SDK's, and turns any exception into the call's ``err``. Imported only by
the entry module ``hookline-filter-py build`` generates (it needs the
``wit_world`` bindings componentize-py makes)."""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import types

import hookline_filter as sdk

_LEVELS = {
    "debug": types.Level.DEBUG,
    "info": types.Level.INFO,
    "warn": types.Level.WARN,
    "error": types.Level.ERROR,
}


def _host_log(level, message):
    wit_world.log(_LEVELS[level], message)


sdk._Log.sink = staticmethod(_host_log)


def _message(error):
    text = str(error)
    return text if text else type(error).__name__


def _event_in(e):
    return sdk.Event(
        name=e.name,
        channel=e.channel,
        user_id=e.user_id,
        socket_id=e.socket_id,
        event=e.event,
        data=e.data,
        subscription_count=e.subscription_count,
        extra=None if e.extra is None else json.loads(e.extra),
    )


def _text(value, what, i):
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"replace: event {i}: {what} must be a string")
    return value


def _event_out(e, i):
    if not isinstance(e.name, str) or not isinstance(e.channel, str):
        raise TypeError(f"replace: event {i} needs a string name and channel")
    extra = e.extra
    if extra is not None and not isinstance(extra, str):
        extra = json.dumps(extra, separators=(",", ":"), ensure_ascii=False)
    return types.Event(
        name=e.name,
        channel=e.channel,
        user_id=_text(e.user_id, "user_id", i),
        socket_id=_text(e.socket_id, "socket_id", i),
        event=_text(e.event, "event", i),
        data=_text(e.data, "data", i),
        subscription_count=None if e.subscription_count is None else int(e.subscription_count),
        extra=extra,
    )


def _lower(verdict, batch):
    if verdict is None or isinstance(verdict, sdk.Keep):
        return types.Verdict_Keep()
    if isinstance(verdict, sdk.Drop):
        return types.Verdict_Drop(str(verdict.reason))
    if isinstance(verdict, sdk.Select):
        return types.Verdict_Select([int(i) for i in verdict.indices])
    if isinstance(verdict, sdk.Replace):
        time_ms = batch.time_ms if verdict.time_ms is None else int(verdict.time_ms)
        events = [_event_out(e, i) for i, e in enumerate(verdict.events)]
        return types.Verdict_Replace(types.Batch(time_ms=time_ms, events=events))
    raise TypeError(
        f"the filter returned {verdict!r}, not a verdict: use keep(), drop(), select(), replace() or retain()"
    )


def validate_config(user, config):
    check = getattr(user, "validate_config", None)
    if check is None:
        return
    try:
        refused = check(json.loads(config))
    except Exception as error:  # every exception is the filter's answer
        raise Err(_message(error))
    if isinstance(refused, str) and refused:
        raise Err(refused)


def run(user, ctx, batch):
    try:
        ours = sdk.Batch(time_ms=batch.time_ms, events=[_event_in(e) for e in batch.events])
        context = sdk.Context(app_id=ctx.app_id, webhook=ctx.webhook, config=json.loads(ctx.config))
        return _lower(user.filter(context, ours), ours)
    except Err:
        raise
    except Exception as error:  # every exception is the filter's answer
        raise Err(_message(error))
