"""End-of-training scoring: the best checkpoint under each eval.final_protocols, into final_metrics.json.

The per-epoch val_loss uses one cheap protocol (eval.protocol) to pick the
best checkpoint; this scores that checkpoint exactly, on the validation split
and, when there is one, the test split, once per checkpoint and settings.
"""

import time

import ml_collections
from flax import nnx

from charlstm import data, evaluate
from charlstm.loop import Training
from charlstm.train_step import TrainState


def final_settings(config: ml_collections.ConfigDict) -> dict:
    """What final_metrics.json's scores depend on besides the checkpoint."""
    return {"protocols": list(config.eval.final_protocols), "max_chars": config.eval.max_chars}


def held_out_scores(graphdef: nnx.GraphDef, params, corpus: data.Corpus, config: ml_collections.ConfigDict) -> dict:
    """The model's loss and bpc under each eval.final_protocols, by split ('val', and 'test' when there is one)."""
    record = {}
    for split, ids in corpus.held_out().items():
        ids = evaluate.scored_ids(ids, config)
        for protocol in config.eval.final_protocols:
            began = time.perf_counter()
            scoring = evaluate.Scoring.from_config(config, protocol, corpus.train_ids)
            loss = evaluate.mean_nll(graphdef, params, ids, scoring)
            record.setdefault(split, {})[protocol] = {
                "loss": loss, "bpc": evaluate.bits_per_char(loss), "chars": len(ids) - config.data.seq_length,
                "seconds": time.perf_counter() - began,
            }
    return record


def evaluate_best(training: Training, like: TrainState) -> None:
    """Scores the best checkpoint of `training`'s run into final_metrics.json, unless that file already
    scores it with these settings; `like` is a training state shaped and placed as the checkpoint's."""
    run, config = training.run, training.config
    best, done = run.checkpoints.best_step(), run.read_final_metrics()
    if best is None or not config.eval.final_protocols:
        return
    if done.get("step") == best and {k: done.get(k) for k in final_settings(config)} == final_settings(config):
        return
    saved, _ = run.checkpoints.restore(best, like=like.to_checkpoint())
    params = TrainState.from_checkpoint(saved).model_params()
    record = {
        "step": best, "epoch": training.history.epoch_at(best), **final_settings(config),
        **held_out_scores(training.graphdef, params, training.corpus, config),
    }
    run.write_final_metrics(record)
    print(describe_final(record))


def describe_final(record: dict) -> str:
    """final_metrics.json as lines: which checkpoint, then each split's bpc per protocol."""
    lines = [f"best checkpoint (epoch {record['epoch']}, step {record['step']}):"]
    for split in ("val", "test"):
        if split in record:
            scores = "  ".join(f"{p} {r['bpc']:.4f}" for p, r in record[split].items())
            lines.append(f"  {split}_bpc {scores}  ({next(iter(record[split].values()))['chars']:,} characters)")
    return "\n".join(lines)
