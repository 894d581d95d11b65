import math

import jax
import numpy as np
from flax import nnx

from charlstm import evaluate
from charlstm.model import CharLSTM
from charlstm.train import split_model


def test_val_loss_matches_a_direct_step_by_step_computation():
    vocab_size, seq_length = 7, 5
    model = CharLSTM(vocab_size, 10, 1, rngs=nnx.Rngs(3))
    ids = np.asarray(jax.random.randint(jax.random.key(0), (23,), 0, vocab_size), np.int32)
    expected = []
    for i in range(seq_length, len(ids)):
        logits, _ = model(ids[None, i - seq_length : i])  # Exactly the preceding seq_length chars.
        expected.append(-jax.nn.log_softmax(logits[0, -1])[ids[i]])
    graphdef, params = split_model(model)
    per_char = evaluate.per_char_nll(graphdef, params, ids, seq_length, batch_size=4)  # 18 = 4*4 + 2.
    np.testing.assert_allclose(per_char, expected, rtol=1e-5)
    mean = evaluate.mean_nll(graphdef, params, ids, seq_length, batch_size=7)
    assert math.isclose(mean, float(np.mean(expected)), rel_tol=1e-5)
    assert math.isclose(evaluate.bits_per_char(mean), mean / math.log(2))


def test_surprisal_tsv_has_one_escaped_row_per_scored_character():
    nll = np.asarray([math.log(2), 2 * math.log(2), 0.0])
    tsv = evaluate.surprisal_tsv("ab\n\t\\", nll)
    assert tsv.splitlines() == [
        "position\tchar\tsurprisal_bits", "2\t\\n\t1.0000", "3\t\\t\t2.0000", "4\t\\\\\t0.0000"
    ]


def test_surprisal_html_escapes_and_shades_each_scored_character():
    page = evaluate.surprisal_html("<a>&\n", np.asarray([0.0, math.log(2) * evaluate.SHADE_BITS, 1.0]), "t<")
    assert '<span class="context">&lt;a</span>' in page and "<title>t&lt;</title>" in page
    assert 'rgba(220,0,0,0.00)" title="0.00 bits">&gt;<' in page
    assert 'rgba(220,0,0,1.00)" title="8.00 bits">&amp;<' in page
    assert "\u21b5\n</span>" in page


def test_max_chars_scores_only_the_first_characters():
    ids, seq_length = np.arange(50), 5
    assert len(evaluate.limit(ids, seq_length, 0)) == 50
    limited = evaluate.limit(ids, seq_length, 12)
    np.testing.assert_array_equal(limited, ids[:17])  # Context, then the 12 characters scored.
