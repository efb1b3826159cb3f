#!/usr/bin/env python3
"""Renders Home Assistant MQTT templates with the real Jinja2 engine, the way
Home Assistant renders them, for tests/mqtt.rs.

Reads a JSON list on stdin; each item is {"template": T, "payload": P} (a
value template: `value` is the payload text and `value_json` the payload
parsed as JSON) or {"template": T, "value": V} (a command template: `value`
is the number set). Writes the rendered strings, stripped as Home Assistant
strips them, as a JSON list on stdout.

Home Assistant's own additions that the gateway's templates use are defined
here as its documentation describes them: the filter `bitwise_and` (a & b)
and the function `as_datetime` (a UNIX timestamp becomes a timezone-aware UTC
datetime). Undefined names are errors (StrictUndefined): a template that
reads a key the payload does not have fails the test, where Home Assistant
would log a warning.
"""
import json
import sys
from datetime import datetime, timezone

try:
    import jinja2
except ImportError:
    sys.exit("python3 has no jinja2: run `make deps` (or apt-get install python3-jinja2)")


def as_datetime(value):
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    return datetime.fromisoformat(value)


env = jinja2.Environment(undefined=jinja2.StrictUndefined)
env.filters["bitwise_and"] = lambda a, b: a & b
env.globals["as_datetime"] = as_datetime

out = []
for item in json.load(sys.stdin):
    template = env.from_string(item["template"])
    if "value" in item:
        variables = {"value": item["value"]}
    else:
        variables = {"value": item["payload"], "value_json": json.loads(item["payload"])}
    out.append(template.render(**variables).strip())
json.dump(out, sys.stdout)
