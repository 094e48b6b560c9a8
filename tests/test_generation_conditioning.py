"""Arc2Face ID conditioning: where the identity vector goes and what it changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthface.generation.conditioning import IdConditioner
from synthface.models.tiny import init_tiny



pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def conditioner(tmp_path_factory):
    from synthface.generation.loading import load_parts

    root = init_tiny(tmp_path_factory.mktemp("tiny-models"), with_face_models=False)
    parts = load_parts(root, torch.device("cpu"), torch.float32)
    return IdConditioner(parts.tokenizer, parts.text_encoder)


def unit(seed: int, n: int = 1) -> torch.Tensor:
    v = np.random.default_rng(seed).standard_normal((n, 512)).astype(np.float32)
    return torch.from_numpy(v / np.linalg.norm(v, axis=1, keepdims=True))


def plain_prompt_output(cond: IdConditioner) -> torch.Tensor:
    with torch.inference_mode():
        return cond.text_encoder(input_ids=cond.prompt_ids).last_hidden_state[0]


def test_prompt_and_id_slot(conditioner):
    c = conditioner
    assert c.prompt_ids.shape == (1, 77)
    assert c.id_position == 4  # <bos> photo of a [id] person <eos> ...
    assert int(c.prompt_ids[0, 4]) == c.id_token_id
    # padded with <eos> to 77, as SD 1.5's tokenizer does
    assert int(c.prompt_ids[0, -1]) == int(c.prompt_ids[0, 6])


def test_encode_shape_and_dtype(conditioner):
    out = conditioner.encode(unit(0, 3))
    assert out.shape == (3, 77, conditioner.width) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_id_vector_is_the_input_embedding_at_the_id_token_and_nowhere_else(conditioner):
    """Capture what enters the first transformer layer: token + position embeddings."""
    c = conditioner
    enc = c.text_encoder
    captured = {}
    layers = enc.text_model.encoder.layers if hasattr(enc, "text_model") else enc.encoder.layers  # transformers 4 / 5

    def capture(_module, args, kwargs):
        captured["h"] = (args[0] if args else kwargs["hidden_states"]).clone()

    handle = layers[0].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        v = unit(1) * 7.0  # not unit length: the conditioner normalises it
        c.encode(v)
    finally:
        handle.remove()
    hidden = captured["h"][0]  # [77, width]
    embeddings = enc.text_model.embeddings if hasattr(enc, "text_model") else enc.embeddings
    positions = embeddings.position_embedding.weight
    tokens = embeddings.token_embedding.weight[c.prompt_ids[0]]
    expected_slot = torch.zeros(c.width)
    expected_slot[:512] = v[0] / v[0].norm()  # L2-normalised, zero-padded to the encoder width
    torch.testing.assert_close(hidden[c.id_position], expected_slot + positions[c.id_position])
    others = [i for i in range(77) if i != c.id_position]
    torch.testing.assert_close(hidden[others], tokens[others] + positions[:77][others])


def test_vector_changes_the_context_only_from_the_id_token_on(conditioner):
    """Causal attention: positions before `id` cannot see it; `id` and every later position
    (the word `person`, <eos> and all the padding) do."""
    c = conditioner
    out = c.encode(torch.cat([unit(2), unit(3)]))
    plain = plain_prompt_output(c)
    p = c.id_position
    for row in out:  # the prefix equals the ordinary prompt's encoding
        torch.testing.assert_close(row[:p], plain[:p], rtol=0, atol=1e-5)
    # from the id token on, each position depends on the vector
    per_position = (out[0, p:] - out[1, p:]).abs().amax(dim=-1)
    assert per_position.shape == (77 - p,)
    assert (per_position > 1e-3).all(), per_position
    # and differs from the plain prompt (the id word's own embedding is gone)
    assert ((out[0, p:] - plain[p:]).abs().amax(dim=-1) > 1e-3).all()


def test_scale_of_the_vector_does_not_matter(conditioner):
    v = unit(4)
    torch.testing.assert_close(conditioner.encode(v), conditioner.encode(v * 0.01), rtol=1e-5, atol=1e-5)


def test_each_row_is_independent_of_its_batch(conditioner):
    a, b = unit(5), unit(6)
    both = conditioner.encode(torch.cat([a, b]))
    torch.testing.assert_close(both[1:], conditioner.encode(b), rtol=1e-5, atol=1e-5)


def test_unconditional_is_the_empty_prompt_encoding(conditioner):
    c = conditioner
    uncond = c.unconditional()
    assert uncond.shape == (1, 77, c.width)
    with torch.inference_mode():
        ids = c.empty_ids
        assert int(ids[0, 0]) != int(ids[0, 1]) and (ids[0, 1:] == ids[0, 1]).all()  # <bos> then <eos> padding
        expected = c.text_encoder(input_ids=ids).last_hidden_state
    torch.testing.assert_close(uncond, expected)
    c.encode(unit(7))  # encoding identities does not alter it
    torch.testing.assert_close(c.unconditional(), expected)


def test_hook_is_removed_after_encoding(conditioner):
    c = conditioner
    c.encode(unit(8))
    with torch.inference_mode():
        again = c.text_encoder(input_ids=c.prompt_ids).last_hidden_state[0]
    torch.testing.assert_close(again, plain_prompt_output(c))
    assert not c.text_encoder.get_input_embeddings()._forward_hooks


def test_wrong_vector_shape_is_rejected(conditioner):
    with pytest.raises(ValueError, match="512"):
        conditioner.encode(torch.zeros(2, 256))
