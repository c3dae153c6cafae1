"""GrowthBook's official Python SDK in streaming mode against a running Verdict.

Usage: python growthbook_stream.py API_HOST CLIENT_KEY FEATURE EXPECTED_JSON

Loads the payload (`/api/features/{CLIENT_KEY}`) and follows `/sub/{CLIENT_KEY}`. Prints
one JSON line `{"first": value}` once loaded (the value of FEATURE for subject `user-1`),
then waits up to 30 s for the stream to bring a payload in which that value is
EXPECTED_JSON: prints `{"updated": value}` and exits 0, or exits 1.
"""

import json
import os
import sys
import time

from growthbook import GrowthBook

api_host, client_key, feature, expected_json = sys.argv[1:5]
expected = json.loads(expected_json)

gb = GrowthBook(api_host=api_host, client_key=client_key, streaming=True)
gb.set_attributes({"id": "user-1"})
print(json.dumps({"first": gb.eval_feature(feature).value}), flush=True)

deadline = time.time() + 30
while time.time() < deadline:
    value = gb.eval_feature(feature).value
    if value == expected:
        print(json.dumps({"updated": value}), flush=True)
        # The SSE client's thread would keep the interpreter alive.
        os._exit(0)
    time.sleep(0.1)
print("the stream did not bring the change", file=sys.stderr, flush=True)
os._exit(1)
