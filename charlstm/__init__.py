"""charlstm: character-level recurrent language models in JAX/Flax."""

from charlstm.errors import CharLSTMError

__all__ = ["CharLSTMError"]
