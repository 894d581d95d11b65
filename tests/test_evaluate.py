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
