"""Every config field at its default, with its meaning and unit; every config starts from this one.

Inside the package, so that a run folder loads (over these defaults) from any install.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # Seeds parameter init, data order per epoch and sampling.

    config.data = ml_collections.ConfigDict()
    config.data.corpus = "obama"  # Built-in corpus when data.path is empty: a name in charlstm.corpora.CORPORA.
    config.data.first_year = 0  # 'sotu' only: first year of addresses to include; 0 = from 1790.
    config.data.last_year = 0  # 'sotu' only: last year of addresses to include; 0 = to the latest.
    config.data.path = ""  # Your own UTF-8 text file; overrides data.corpus.
    config.data.dir = "data"  # Where built-in corpora are written on first use.
    config.data.keep_chars = "\nA-Za-z0-9 ,.:;?!-"  # Regex class of kept chars (the lab's); "" keeps all.
    config.data.lowercase = True  # Lowercase after filtering, as the lab did.
    config.data.max_chars = 0  # Use only the first N cleaned characters; 0 = all.
    config.data.val_fraction = 0.1  # Contiguous part of the corpus after training, held out for validation.
    config.data.test_fraction = 0.0  # Contiguous tail after validation, scored only at the end; 0 = none.
    config.data.seq_length = 100  # Characters of context per training window and per prediction.

    config.model = ml_collections.ConfigDict()
    config.model.units = 128  # LSTM hidden units per layer.
    config.model.num_layers = 1  # Stacked recurrent layers.
    config.model.cell = "lstm"  # Recurrent cell: a name in charlstm.cells.CELLS, e.g. 'lstm' or 'gru'.
    config.model.embed_dim = 0  # Learned character embedding size; 0 = one-hot input.
    # LSTM implementation (charlstm.lstm): 'auto' = the fastest that runs here, or 'cudnn', 'cpu_kernel',
    # 'xla', 'autodiff'; all give the same numbers to float rounding.
    config.model.lstm_impl = "auto"
    config.model.dropout = 0.0  # Variational dropout on each layer's output (before the head); training only.
    config.model.weight_dropout = 0.0  # DropConnect on recurrent kernels, one mask per batch; training only.
    # Embedding dropout: whole characters' rows of the input table (embedding, or one-hot input kernel) zeroed,
    # one mask per batch, the rest scaled by 1/(1-p); a probability in [0, 1), training only.
    config.model.embed_dropout = 0.0
    # Tie the head's kernel to the input embedding (needs embed_dim > 0; with embed_dim != units a learned
    # units -> embed_dim projection comes first).
    config.model.tie_weights = False
    config.model.mogrifier_rounds = 0  # model.cell='mogrifier': rounds of x and h gating each other (e.g. 5); 0 = LSTM.

    config.train = ml_collections.ConfigDict()
    config.train.objective = "all"  # 'all': loss at every position; 'last': the lab's one target per window.
    config.train.batch_size = 64  # Windows per step over all devices; a multiple of the device count.
    config.train.epochs = 30  # Passes over the training characters ('last': over all stride-1 windows).
    config.train.stop_after_epoch = 0  # Stop after this epoch, the schedule still spanning train.epochs; 0 = off.
    config.train.learning_rate = 1e-2  # Adam's peak step size.
    config.train.schedule = "constant"  # "constant", or "cosine": decay to 0 over the run's steps.
    config.train.warmup_steps = 0  # Steps of linear warm-up from 0 to learning_rate.
    config.train.clip_norm = 0.0  # Clip gradients to this global norm; 0 = no clipping.
    config.train.weight_decay = 0.0  # Decoupled weight decay (AdamW) per step, times learning rate.
    config.train.average_decay = 0.0  # Evaluate and keep a moving average of the weights with this decay; 0 = off.
    # AR: this weight times the mean square of the top layer's outputs (after dropout), added to the training
    # loss (not to train_loss, which stays the cross-entropy in nats); 0 = off.
    config.train.activation_reg = 0.0
    # TAR: this weight times the mean square of the top layer's output changes from one step to the next
    # (before dropout), added to the training loss as AR is; 0 = off.
    config.train.temporal_activation_reg = 0.0
    config.train.stateful = False  # Carry the LSTM state across consecutive windows (truncated BPTT).
    # The last this many of train.epochs read only the latest train.recent_fraction of the training text (in a
    # corpus in date order, the addresses closest to the validation text's); 0 = every epoch reads all of it.
    config.train.recent_epochs = 0
    config.train.recent_fraction = 0.25  # Share of the training text, from its end, that the recent epochs read.
    config.train.patience = 0  # Stop after this many epochs without a better val_loss; 0 = never.
    config.train.overfit_margin = 0.15  # Warn when val_loss exceeds train_loss by more (nats).
    config.train.dtype = "float32"  # Compute dtype: 'bfloat16' for GPU/TPU mixed precision (params stay float32).
    config.train.log_every_steps = 10  # Steps between loss read-outs on the progress bar.
    # A trained run folder whose best weights a new run starts from (fine-tuning; the model's shape must match):
    # characters both vocabularies share keep their trained rows, new ones start fresh. "" = a new model.
    config.train.init_from = ""

    config.eval = ml_collections.ConfigDict()
    # Per-epoch val_loss, a name in charlstm.protocols.PROTOCOLS: 'segments' (cheap), 'window' (exact, slow), ...
    config.eval.protocol = "segments"
    config.eval.segment_length = 400  # 'segments': scored characters per segment.
    config.eval.burn_in = 100  # 'segments': characters each segment's state is warmed up on, unscored.
    config.eval.final_protocols = ("window", "stream")  # Scored on the best checkpoint when training ends.
    config.eval.batch_size = 256  # Windows or segments per evaluation batch; memory only, not the result.
    config.eval.max_chars = 0  # Score only the first N validation (and test) characters; 0 = all.
    config.eval.dynamic = ml_collections.ConfigDict()  # The 'dynamic' protocol: weights adapted while scoring.
    config.eval.dynamic.learning_rate = 3e-5  # Size of the RMS-normalised step per segment.
    config.eval.dynamic.decay = 1e-3  # Pull toward the trained weights per segment, in [0, 1]; 0 = none.
    config.eval.dynamic.segment_length = 20  # Characters scored, then trained on, per step.

    config.sample = ml_collections.ConfigDict()
    config.sample.temperatures = (0.5, 1.2)  # One sample per temperature each epoch; 0 = greedy.
    config.sample.length = 100  # Characters generated per sample.
    config.sample.top_k = 0  # Sample only among the k most likely characters; 0 = all.
    config.sample.top_p = 1.0  # Sample only within the smallest set reaching this probability.
    config.sample.stop = ""  # Cut each sample after the first occurrence of this string; "" = never.
    config.sample.oov = "error"  # Prompt chars the cleaning keeps but the vocab lacks: 'error' or 'skip'.

    config.log = ml_collections.ConfigDict()
    config.log.tensorboard = False  # Also write scalars and samples to <workdir>/tensorboard/.
    return config
