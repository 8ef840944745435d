"""The three action modules: shapes, gradients, causality of the sequence encoder, rebuilding from a config."""

import pytest
import torch

from kinema.video_world_model.modeling._action_modules import (
    ACTION_MODULES,
    PLAY_ACTIONS,
    ActionSequenceEncoder,
    HistoryActionModule,
    MultimodalActionModule,
    action_module_kind,
    build_action_module,
)


def assert_all_parameters_get_gradients(module, output):
    output.pow(2).sum().backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("frames", [1, 3, 5])
def test_history_module_shapes_and_gradients(frames):
    module = HistoryActionModule(latent_dim=4, action_dim=16, hidden_dims=(6, 8))
    history = torch.randn(2, frames, 4, 4, 4, requires_grad=True)
    features = module(history)
    assert features.shape == (2, 16)
    assert_all_parameters_get_gradients(module, features)
    assert history.grad is not None and history.grad.abs().sum() > 0


def test_history_module_keeps_only_the_recent_frames():
    module = HistoryActionModule(latent_dim=4, action_dim=16, hidden_dims=(6, 8), history_frames=2)
    recent = torch.randn(1, 2, 4, 4, 4)
    longer = torch.cat([torch.randn(1, 3, 4, 4, 4), recent], dim=1)
    assert torch.equal(module(longer), module(recent))
    with pytest.raises(ValueError, match=r"expected \(B, F, 4, h, w\)"):
        module(torch.randn(1, 2, 3, 4, 4))


def test_sequence_encoder_shapes_gradients_and_causality():
    module = ActionSequenceEncoder(action_dim=16, embed_dim=8, hidden_dim=12)
    assert module.action_vocab_size == len(PLAY_ACTIONS) == 9
    actions = torch.tensor([[1, 2, 3, 4], [0, 0, 8, 8]])
    features = module(actions)
    assert features.shape == (2, 16)
    assert_all_parameters_get_gradients(module, features)
    with torch.no_grad():  # the last action matters, and so does the order of the earlier ones
        assert not torch.allclose(module(actions[:, :3]), module(actions[:, :2]))
        assert not torch.allclose(module(actions[:, [1, 0, 2]]), module(actions[:, :3]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 9\)"):
        module.check_ids(torch.tensor([[0, 9]]))
    with pytest.raises(ValueError, match="integer action ids"):
        module.check_ids(torch.tensor([[0.5]]))


def test_multimodal_module_shapes_and_gradients():
    module = MultimodalActionModule(
        visual_dim=4, text_dim=16, action_dim=12, visual_hidden=6, text_hidden=5, fusion_hidden=7
    )
    frames = torch.randn(2, 3, 4, 4, 4)
    text = torch.randn(2, 16)
    features = module(frames, text)
    assert features.shape == (2, 12)
    assert_all_parameters_get_gradients(module, features)
    no_history = module(None, text)  # the first block: text only, visual part zero
    assert no_history.shape == (2, 12)
    with pytest.raises(ValueError, match=r"text_features: expected \(B, 16\)"):
        module(frames, torch.randn(2, 15))


@pytest.mark.parametrize("kind", sorted(ACTION_MODULES))
def test_modules_rebuild_from_their_config(kind):
    small = {
        "history": {"latent_dim": 4, "action_dim": 8, "hidden_dims": (4, 4)},
        "sequence": {"action_dim": 8, "embed_dim": 4, "hidden_dim": 4},
        "multimodal": {"visual_dim": 4, "text_dim": 8, "action_dim": 8, "visual_hidden": 4, "text_hidden": 4},
    }[kind]
    module = ACTION_MODULES[kind](**small)
    rebuilt = build_action_module(kind, module.config)
    assert action_module_kind(rebuilt) == kind
    assert rebuilt.config == module.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in module.state_dict().items()
    }
    with pytest.raises(ValueError, match="expected one of"):
        build_action_module("lstm", {})
    with pytest.raises(ValueError, match=f"action module config for '{kind}'"):
        build_action_module(kind, {"nonsense": 1})
