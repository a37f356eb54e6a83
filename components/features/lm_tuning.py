"""A text encoder that can learn: LoRA adapters (peft) on the transformers encoder featurize uses.

The same mean-pooled, L2-normalised sentence vectors as `features/text.TextEncoder`, but computed
with gradients, so that a recommendation loss can reach the language model. Only the low-rank
adapters on the attention projections (`target_modules`) learn; the encoder's own weights stay as
published. `components/training/lm_tuning.py` trains it inside the recommendation objective.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from components.config import LMTuningConfig
from components.features.text import PACKAGED_ENCODER, resolve_encoder_path


class TunableTextEncoder(nn.Module):
    """The encoder at `encoder` with LoRA adapters; `forward` maps token ids to (B, D) unit vectors."""

    def __init__(self, cfg: LMTuningConfig, encoder: str = PACKAGED_ENCODER):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import peft
        import transformers

        path = resolve_encoder_path(encoder)
        self.max_length = cfg.max_length
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        base = transformers.AutoModel.from_pretrained(path)
        lora = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                               target_modules=list(cfg.target_modules), bias="none")
        self.model = peft.get_peft_model(base, lora)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention masks of `texts`, padded to the longest (at most max_length)."""
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return nn.functional.normalize(pooled, dim=-1)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), D) float32 unit vectors with the adapters as they are; empty texts give zero vectors."""
        was_training = self.training
        self.eval()
        out = np.zeros((len(texts), self.model.config.hidden_size), np.float32)
        todo = [i for i, t in enumerate(texts) if t.strip()]
        for start in range(0, len(todo), batch_size):
            idx = todo[start:start + batch_size]
            tokens = self.tokenize([texts[i] for i in idx])
            out[idx] = self(tokens["input_ids"], tokens["attention_mask"]).numpy()
        self.train(was_training)
        return out

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]
