"""The loss of one micro-batch: cross-entropy summed over its label tokens, with the vocabulary projection
computed only where there is a label.

`model(input_ids, attention_mask, decoder_input_ids).logits` projects *every* decoder position onto the 32,128
words of the vocabulary, padding included, and the loss then upcasts all those logits to fp32 before throwing
the padded rows away (`ignore_index=-100`). Here we run the same encoder and decoder, pick the decoder states of
the label tokens first, and project only those: the same numbers for every label token, and no work for padding.
Nothing else changes: the rows kept are exactly the rows the full-logits loss counts, so the loss and every
gradient are the same (tests/test_loss.py checks both against the full-logits loss).

What `T5ForConditionalGeneration.forward` (transformers 5.23) does, and so what we do in the same order:
encoder(input_ids, attention_mask) -> decoder(decoder_input_ids, cross-attending to the encoder states under the
same attention_mask) -> times d_model**-0.5 when `config.scale_decoder_outputs` (a tied head; FLAN-T5's is
untied, so not there) -> lm_head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from train_loop.precision import autocast

IGNORE_INDEX = -100


def decoder_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   decoder_input_ids: torch.Tensor) -> torch.Tensor:
    """The last decoder layer's output, as the model would pass it to `lm_head`. Shape: (B, T, d_model)."""
    encoded = model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, S, d)
    hidden = model.decoder(input_ids=decoder_input_ids, encoder_hidden_states=encoded,
                           encoder_attention_mask=attention_mask).last_hidden_state  # (B, T, d)
    if model.config.scale_decoder_outputs:
        hidden = hidden * model.config.d_model**-0.5
    return hidden


def token_loss_sum(model, batch: dict[str, torch.Tensor], precision: str, device: torch.device) -> torch.Tensor:
    """Summed cross-entropy over the label tokens of one micro-batch, in fp32. Shape: () ."""
    labels = batch["labels"].flatten()                                        # (B*T,), -100 at padding
    # Where the label tokens are. On a GPU, nonzero() waits for the device: here, before any work is queued,
    # that wait is free; a boolean index after the decoder would stall the GPU mid-step instead.
    rows = (labels != IGNORE_INDEX).nonzero().squeeze(1)                      # (N,)
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(batch["labels"])  # (B, T): [pad, y1, ..., y_T-1]
    with autocast(precision, device):
        hidden = decoder_states(model, batch["input_ids"], batch["attention_mask"], decoder_input_ids)  # (B, T, d)
        logits = model.lm_head(hidden.flatten(0, 1)[rows])                   # (N, V)
    return F.cross_entropy(logits.float(), labels[rows], reduction="sum")    # fp32 log-softmax over V
