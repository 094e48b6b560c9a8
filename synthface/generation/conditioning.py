"""Arc2Face's identity conditioning, on the public transformers API.

Arc2Face drives Stable Diffusion with one fixed prompt, ``"photo of a id
person"``. The token embedding of the word ``id`` is replaced by the identity
vector (L2-normalised, 512-d, zero-padded to the encoder width); the CLIP text
encoder then runs as usual on those input embeddings (adds position
embeddings, causal self-attention, final layer norm). Its last hidden state is
the UNet's cross-attention context. The unconditional context for guidance is
the encoder output of the empty prompt, as diffusers computes it with no
negative prompt.

The swap is done with a forward hook on the encoder's input-embedding layer:
the rest of the forward pass (position ids, causal mask, attention backend) is
the model's own code, unchanged across transformers 4.x and 5.x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from synthface.errors import MissingModelError
from synthface.models.layout import ARC2FACE_PROMPT, ID_DIM, ID_TOKEN


class IdConditioner:
    """Turns identity vectors into UNet ``encoder_hidden_states`` [B, 77, width]."""

    def __init__(self, tokenizer, text_encoder):
        self.text_encoder = text_encoder
        self.width = int(text_encoder.config.hidden_size)
        if self.width < ID_DIM:
            raise MissingModelError(
                f"text encoder width {self.width} is smaller than the {ID_DIM}-d identity vector: "
                "this is not an Arc2Face encoder (check the encoder/ folder)"
            )
        max_len = int(tokenizer.model_max_length)
        if max_len > 1024:  # tokenizer saved without model_max_length
            max_len = int(text_encoder.config.max_position_embeddings)
        self.max_length = max_len

        id_tokens = tokenizer.encode(ID_TOKEN, add_special_tokens=False)
        if len(id_tokens) != 1:
            raise MissingModelError(
                f"tokenizer splits {ID_TOKEN!r} into {len(id_tokens)} tokens; Arc2Face needs it as one "
                "token (is tokenizer/ the SD 1.5 CLIP tokenizer?)"
            )
        self.id_token_id = int(id_tokens[0])

        def ids(text: str) -> torch.Tensor:
            return tokenizer(
                text, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
            ).input_ids

        self.prompt_ids = ids(ARC2FACE_PROMPT)  # [1, 77]
        positions = (self.prompt_ids[0] == self.id_token_id).nonzero().flatten().tolist()
        if len(positions) != 1:
            raise MissingModelError(f"the Arc2Face prompt has {len(positions)} {ID_TOKEN!r} tokens, expected 1")
        self.id_position = positions[0]
        self.empty_ids = ids("")  # [1, 77]: diffusers' unconditional input
        self._uncond: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.text_encoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.text_encoder.parameters()).dtype

    def padded_id_embeddings(self, id_vectors: torch.Tensor) -> torch.Tensor:
        """[B, 512] -> L2-normalised, zero-padded [B, width] (float32)."""
        v = id_vectors.to(torch.float32)
        v = v / v.norm(dim=1, keepdim=True)
        return F.pad(v, (0, self.width - v.shape[1]))

    @torch.inference_mode()
    def encode(self, id_vectors: torch.Tensor) -> torch.Tensor:
        """Conditional context for each identity vector: [B, 77, width] in the encoder dtype."""
        if id_vectors.ndim != 2 or id_vectors.shape[1] != ID_DIM:
            raise ValueError(f"expected id vectors of shape [B, {ID_DIM}], got {tuple(id_vectors.shape)}")
        batch = id_vectors.shape[0]
        slot = self.padded_id_embeddings(id_vectors).to(self.device, self.dtype)
        position = self.id_position

        def put_identity(_module, _inputs, token_embeds: torch.Tensor) -> torch.Tensor:
            token_embeds = token_embeds.clone()
            token_embeds[:, position] = slot
            return token_embeds

        handle = self.text_encoder.get_input_embeddings().register_forward_hook(put_identity)
        try:
            input_ids = self.prompt_ids.to(self.device).expand(batch, -1)
            return self.text_encoder(input_ids=input_ids).last_hidden_state
        finally:
            handle.remove()

    @torch.inference_mode()
    def unconditional(self) -> torch.Tensor:
        """Context of the empty prompt, [1, 77, width]; computed once."""
        if self._uncond is None:
            self._uncond = self.text_encoder(input_ids=self.empty_ids.to(self.device)).last_hidden_state
        return self._uncond
