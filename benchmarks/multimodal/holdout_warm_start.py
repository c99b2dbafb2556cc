"""One-off check: the warm start (projector + image readout) fitted on the first half of the training images only,
then MMR training (as arm (a) of run.py) on all of them, so the contrastive loss does not start near zero; prints
nDCG@10 x100 at (1,1) of the trained and the untrained model on the three tasks (per-query files under --work).

    .venv/bin/python benchmarks/multimodal/holdout_warm_start.py [--data DIR] [--work DIR]
"""
import argparse
import os, json, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from pathlib import Path
from metaembed import MetaEmbed
from metaembed.budgets import PAPER_BUDGETS, Budget
from metaembed.model import pretrained
from metaembed.training import TrainConfig, train
from metaembed.training.data import read_jsonl
from metaembed.training.projector_warm_start import warm_start_projector
from metaembed.evaluation import evaluate
from metaembed.evaluation.sweep import SweepSettings
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data", type=Path, default=Path("/tmp/metaembed-multimodal-benchmark/data-3000"))
parser.add_argument("--work", type=Path, default=Path("/tmp/metaembed-multimodal-benchmark/holdout-warm-start"))
parser.add_argument("--fitted-images", type=int, default=812, help="distinct training images the warm start reads")
args = parser.parse_args()
data, work = args.data, args.work
t = time.time()
h = work / "h_model"
if not (h / "config.json").is_file():
    model = MetaEmbed.from_backbone(pretrained.minilm_path(), 16, 64, vision_tower=pretrained.mobilenet_v2_path(),
                                    max_seq_length=96, first_vector="auto", meta_residual=None)
    print(warm_start_projector(model, read_jsonl(data / "train.jsonl")[0], max_images=args.fitted_images,
                                    image_readout=True).summary(), flush=True)
    model.save_pretrained(str(h))
print("built", time.time() - t, flush=True)
config = TrainConfig(model=str(h), train_jsonl=[str(data / "train.jsonl")], output_dir=str(work / "a"), max_steps=100,
                     batch_size=32, num_negatives=1, learning_rate=1e-4, warmup_ratio=0.1, max_seq_length=96,
                     attention_dropout=0.0, seed=0, save_steps=10**6, projector_learning_rate=1e-3, logging_steps=10,
                     batches_by_task=True, groups=[str(Budget(*b)) for b in PAPER_BUDGETS])
result = train(config)
print("trained", time.time() - t, flush=True)
settings = SweepSettings(batch_size=32, latency_queries=4, latency_repeats=1, use_cache=False)
for name, path in (("a", result.model_path), ("h", str(h))):
    r = evaluate(path, data / "beir", ["1,1"], work / f"eval_{name}", settings=settings)
    scores = {k: round(100 * v["ndcg@10"], 1) for k, v in r["budgets"]["1,1"]["tasks"].items()}
    print(name, json.dumps(scores), round(time.time() - t), flush=True)
