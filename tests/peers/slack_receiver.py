#!/usr/bin/env python3
"""A Slack incoming webhook stand-in that validates every message as Block Kit with the
official PyPI `slack_sdk` (tests/sink_examples.rs, the `slack` example sink).

Usage: python slack_receiver.py [--port 0]   (see sink_receiver.py: output, control API)

A message must be a JSON object `{"text", "blocks"}`: `text` a non-empty string (the
notification's fallback), `blocks` 1 to 50 blocks (Slack's most per message). Each block is
parsed with `slack_sdk.models.blocks.Block.parse` and checked with `validate_json()` and
`to_dict()` (which enforce Slack's documented limits: 3000 characters per section, 150 per
header, ...); it must come back from `to_dict()` unchanged (so no key slack_sdk does not
know), and a header's text must be plain_text. Anything else is answered 400, as Slack
answers `invalid_blocks`.

Summary of a valid message: {"text", "blocks": n, "header": header text or null,
"sections": [section texts, in order]}.
"""

import json
import os
import sys

from slack_sdk.models.blocks import Block, HeaderBlock, SectionBlock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sink_receiver import Invalid, serve  # noqa: E402

MAX_BLOCKS = 50


def validate(path, headers, body):
    if not headers.get("content-type", "").startswith("application/json"):
        raise Invalid(f"content-type is {headers.get('content-type')!r}, not application/json")
    message = json.loads(body)
    if not isinstance(message, dict):
        raise Invalid("the message is not a JSON object")
    text = message.get("text")
    if not isinstance(text, str) or not text:
        raise Invalid("no top-level `text` (the notification's fallback)")
    blocks = message.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        raise Invalid("no `blocks`")
    if len(blocks) > MAX_BLOCKS:
        raise Invalid(f"{len(blocks)} blocks: Slack takes at most {MAX_BLOCKS} per message")
    header, sections = None, []
    for index, raw in enumerate(blocks):
        block = Block.parse(raw)
        if block is None:
            raise Invalid(f"block {index} is not a Block Kit block: {raw!r}")
        block.validate_json()
        if block.to_dict() != raw:
            raise Invalid(f"block {index} has keys slack_sdk does not know: {raw!r}")
        if isinstance(block, HeaderBlock):
            if raw["text"].get("type") != "plain_text":
                raise Invalid(f"block {index}: a header's text must be plain_text")
            header = block.text.text
        elif isinstance(block, SectionBlock):
            sections.append(block.text.text)
    return {"text": text, "blocks": len(blocks), "header": header, "sections": sections}


if __name__ == "__main__":
    serve(validate, "Slack incoming webhook stand-in validating Block Kit with slack_sdk")
