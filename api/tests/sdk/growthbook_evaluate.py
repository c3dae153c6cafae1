"""Evaluates Verdict's experiments with GrowthBook's official Python SDK.

Usage: python growthbook_evaluate.py API_HOST CLIENT_KEY SUBJECTS_JSON

The SDK loads its payload from API_HOST (`/api/features/{CLIENT_KEY}`, as GrowthBook SDKs
do) and evaluates every feature for every subject of SUBJECTS_JSON (a list of
`{"id": ..., "attributes": {...}}`). Prints one JSON object: per subject id, per feature,
`[value, in_experiment, variation_index]` (`variation_index` null outside an experiment),
and the exposures the SDK's tracking callback reported: `[subject, experiment, variant]`.
"""

import json
import sys

from growthbook import GrowthBook

api_host, client_key, subjects_path = sys.argv[1:4]
with open(subjects_path, encoding="utf-8") as f:
    subjects = json.load(f)

tracked = []


def track(experiment, result, **_):
    tracked.append([result.hashValue, experiment.key, result.key])


gb = GrowthBook(api_host=api_host, client_key=client_key, on_experiment_viewed=track)
gb.load_features()
features = sorted(gb.get_features().keys())
if not features:
    sys.exit("the SDK loaded no feature from " + api_host)

out = {}
for subject in subjects:
    gb.set_attributes({"id": subject["id"], **subject["attributes"]})
    seen = {}
    for key in features:
        r = gb.eval_feature(key)
        result = r.experimentResult
        in_experiment = bool(result and result.inExperiment)
        seen[key] = [r.value, in_experiment, result.variationId if in_experiment else None]
    out[subject["id"]] = seen
gb.destroy()
json.dump({"features": features, "subjects": out, "tracked": tracked}, sys.stdout, ensure_ascii=False)
