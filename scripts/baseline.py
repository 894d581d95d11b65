"""Kneser-Ney n-gram baselines on a run's own corpus and split: the val_bpc a neural model must beat.

    python scripts/baseline.py --config configs/obama.py
    python scripts/baseline.py --config configs/obama.py --orders=3,5,10 --json

val_loss is defined as for the model (charlstm.evaluate): every validation character at position
>= data.seq_length, predicted from the characters before it (an n-gram reads only the last order-1,
so every protocol gives it the same number). With a test split (data.test_fraction > 0) the test
text is scored the same way and reported beside validation; choose the order on validation.
"""

import json

from absl import flags
from ml_collections import config_flags

from charlstm import cli, ngram
from charlstm.data import load_corpus
from charlstm.errors import CharLSTMError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/obama.py.")
_ORDERS = flags.DEFINE_string("orders", ",".join(map(str, ngram.ORDERS)), "Comma-separated n-gram orders to fit.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
flags.mark_flags_as_required(["config"])


def parse_orders(text: str, seq_length: int) -> list[int]:
    """The orders in `text`, each checked: an integer >= 1 whose context fits in seq_length."""
    try:
        orders = [int(part) for part in text.split(",")]
    except ValueError:
        raise CharLSTMError(
            f"--orders={text!r} is invalid: give comma-separated integers, e.g. --orders=1,3,5"
        ) from None
    for order in orders:
        if order < 1:
            raise CharLSTMError(f"--orders contains {order}: every order must be >= 1")
        if order - 1 > seq_length:
            raise CharLSTMError(
                f"--orders contains {order}, which needs {order - 1} characters of context: use orders "
                f"<= data.seq_length + 1 = {seq_length + 1}, or raise --config.data.seq_length"
            )
    return list(dict.fromkeys(orders))


def main() -> None:
    data, as_json = _CONFIG.value.data, _JSON.value
    orders = parse_orders(_ORDERS.value, data.seq_length)
    corpus = load_corpus(data)
    splits = corpus.held_out()
    results = ngram.score_orders(corpus, orders, data.seq_length)
    best = min(results, key=lambda r: r["val_loss"])
    if as_json:
        print(json.dumps({
            "corpus": corpus.source, "train_chars": len(corpus.train_ids), "val_chars": len(corpus.val_ids),
            "test_chars": len(corpus.test_ids), "vocab_size": corpus.vocab.size, "seq_length": data.seq_length,
            "results": results, "best": {k: best[k] for k in ("order", *(f"{s}_bpc" for s in splits))},
        }))
        return
    print(f"Kneser-Ney baselines on {corpus.source}: {len(corpus.train_ids)} train, {len(corpus.val_ids)} val, "
          f"{len(corpus.test_ids)} test chars, V={corpus.vocab.size}, seq_length={data.seq_length}")
    columns = [f"{s}_{m}" for s in splits for m in ("loss", "bpc")]
    print(f"{'order':>5}  " + "  ".join(f"{c:>9}" for c in columns) + f"  {'seconds':>7}")
    for r in results:
        print(f"{r['order']:>5}  " + "  ".join(f"{r[c]:>9.4f}" for c in columns) + f"  {r['seconds']:>7.2f}")
    chosen = ", ".join(f"{s}_bpc {best[f'{s}_bpc']:.4f}" for s in splits)
    print(f"best on validation: order {best['order']}, {chosen}")


if __name__ == "__main__":
    cli.run(main, "pass settings as --config.FIELD=VALUE")
