"""Calibrate the "weak match" cue: the MaxSim score per query token below which a hit is
flagged as a weak match, on scifact-dev, tuned on one half of the queries and reported on the
other.

Strong matches: each dev query's judged-relevant abstracts. Unrelated: questions about Python
(the first sentences of the glossary entries of Debian's ``python3-doc``) asked of the same
abstracts, whose best hit is, by construction, not a good match. Scores are exact MaxSim
(``maxsim_scores``) with the bundled model, divided by the query's token count (a mean best
cosine per query token, so long and short queries compare).

The 809 queries are split in two halves by a seeded shuffle (seed 0, as benchmarks/hybrid.py
does). On the tuning half the threshold is the 5th percentile of the relevant abstracts'
normalized scores (95% of good matches are not flagged); the held-out half reports how many
relevant matches it flags and how many unrelated best hits it catches.

    nice -n 10 python benchmarks/weak_match.py [--distractors 1000]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `edge_colbert` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.eval_scifact import DEFAULT_SCIFACT, load_dataset

SPLIT_SEED = 0
KEEP_GOOD = 0.95


def unrelated_queries(limit: int) -> list[str]:
    """First sentences of the Python glossary's entries, 5 to 25 words long."""
    from edge_colbert.extract import extract_sections

    pages = sorted(Path("/usr/share/doc").glob("python3*/html/glossary.html"))
    if not pages:
        raise SystemExit("needs Debian's python3-doc: apt-get install -y python3-doc")
    text = "\n\n".join(section.text for section in extract_sections(pages[0]))
    sentences = []
    for paragraph in text.split("\n\n"):
        first = re.split(r"(?<=[.!?])\s", paragraph.strip(), maxsplit=1)[0]
        if 5 <= len(first.split()) <= 25:
            sentences.append(first)
    return sentences[:limit]


def main(argv: list[str] | None = None) -> int:
    """Print the threshold and its figures on the held-out half."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_SCIFACT)
    parser.add_argument("--distractors", type=int, default=1000)
    parser.add_argument("--unrelated", type=int, default=200)
    args = parser.parse_args(argv)

    from edge_colbert.encoder import Encoder
    from edge_colbert.maxsim import maxsim_scores

    data = load_dataset(args.data)
    position = {doc_id: n for n, doc_id in enumerate(data.doc_ids)}
    judged = [q for q in data.query_ids if any(s > 0 for s in data.qrels.get(q, {}).values())]
    order = list(range(len(data.query_ids)))
    random.Random(SPLIT_SEED).shuffle(order)
    tune = {data.query_ids[i] for i in order[: len(order) // 2]}
    relevant = sorted({position[d] for q in judged for d, s in data.qrels[q].items() if s > 0})
    rng = random.Random(SPLIT_SEED)
    others = [n for n in range(len(data.doc_ids)) if n not in set(relevant)]
    docs = relevant + rng.sample(others, min(args.distractors, len(others)))
    encoder = Encoder()
    vectors: dict[int, np.ndarray] = {}
    for start in range(0, len(docs), 256):
        batch = docs[start : start + 256]
        encoded = encoder.encode_documents([data.doc_texts[i] for i in batch])
        vectors.update(zip(batch, encoded, strict=True))
    stack = [vectors[n] for n in docs]
    text_of = dict(zip(data.query_ids, data.query_texts, strict=True))

    def normalized(query: str) -> tuple[Any, int]:
        (q,) = encoder.encode_queries([query])
        return maxsim_scores(q, stack) / len(q), len(q)

    good: dict[bool, list[float]] = {True: [], False: []}
    for q in judged:
        scores, _ = normalized(text_of[q])
        for d, s in data.qrels[q].items():
            if s > 0:
                good[q in tune].append(float(scores[docs.index(position[d])]))
    unrelated = unrelated_queries(args.unrelated)
    bad = [float(normalized(query)[0].max()) for query in unrelated]
    half = len(bad) // 2
    bad_tune, bad_held = bad[:half], bad[half:]
    threshold = float(np.quantile(good[True], 1 - KEEP_GOOD))
    flagged_good = np.mean(np.array(good[False]) < threshold)
    caught_bad = np.mean(np.array(bad_held) < threshold)
    print(
        f"corpus: {len(docs)} abstracts ({len(relevant)} judged relevant, "
        f"{len(docs) - len(relevant)} random); {len(judged)} queries with judgements; "
        f"{len(unrelated)} unrelated questions"
    )
    print(f"threshold (tuning half, keeps {KEEP_GOOD:.0%} of relevant): {threshold:.3f}")
    print(
        f"held-out half: relevant matches flagged weak {flagged_good:.1%} "
        f"(n={len(good[False])}); unrelated best hits flagged weak {caught_bad:.1%} "
        f"(n={len(bad_held)})"
    )
    print(
        "score per query token, median: relevant "
        f"{np.median(good[False]):.3f}, unrelated best hit {np.median(bad_held):.3f}; "
        f"tuning unrelated median {np.median(bad_tune):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
