"""Clip-by-clip agreement of two evaluation reports (e.g. a checkpoint and its bundle):
python scripts/compare_runs.py REF.json OTHER.json"""

import json
import sys

from emo_edge.labels import parse_label


def main(ref_path: str, other_path: str) -> dict:
    ref = {p["id"]: p for p in json.load(open(ref_path))["predictions"]}
    other = {p["id"]: p for p in json.load(open(other_path))["predictions"]}
    ids = sorted(set(ref) & set(other))
    out = {"n": len(ids), "same_head_label": sum(ref[i]["head"] == other[i]["head"] for i in ids) / len(ids)}
    if all("answer" in ref[i] and "answer" in other[i] for i in ids):
        out["identical_answers"] = sum(ref[i]["answer"] == other[i]["answer"] for i in ids) / len(ids)
        out["same_llm_label"] = sum(parse_label(ref[i]["answer"]) == parse_label(other[i]["answer"])
                                    for i in ids) / len(ids)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
