import pytest
import torch
from torch import nn

from kinema.video_world_model import ACTION_CONTROLLER_CONFIGS, WanActionController
from kinema.video_world_model.testing import tiny_controller


class ReferenceController(nn.Module):
    """The parameter layout of the reference design's controller (its __init__, without behaviour)."""

    def __init__(self, action_dim=8, hidden_size=24, num_heads=2, num_latent_frames=4, num_layers=2):
        super().__init__()
        head_dim = hidden_size // num_heads
        self.action_embed = nn.Sequential(
            nn.Linear(action_dim * 2, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )
        self.temporal_pos_embed = nn.Parameter(torch.randn(1, num_latent_frames, hidden_size) * 0.02)
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.action_to_tmod = nn.Linear(hidden_size, hidden_size * 6, bias=False)
        self.action_to_residual = nn.Linear(hidden_size, hidden_size, bias=False)
        self.q_norm = nn.Module()
        self.q_norm.weight = nn.Parameter(torch.rand(head_dim))
        self.k_norm = nn.Module()
        self.k_norm.weight = nn.Parameter(torch.rand(head_dim))
        self.output_scale = nn.Parameter(torch.ones(num_layers) * 0.01)


@pytest.mark.parametrize("injection_type", ["cross_attn_frame", "adaln_tmod", "add_residual"])
def test_reference_state_dict_loads_strictly(injection_type):
    reference = ReferenceController().state_dict()
    controller = tiny_controller(injection_type)
    controller.load_reference_state_dict(reference)
    for key, value in controller.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_state_dict_mismatch_names_key_and_shapes():
    controller = tiny_controller()
    bad = ReferenceController().state_dict()
    bad["o_proj.weight"] = torch.zeros(24, 12)
    with pytest.raises(
        ValueError, match=r"o_proj.weight has shape \(24, 12\), this controller expects \(24, 24\)"
    ):
        controller.load_reference_state_dict(bad)
    del bad["o_proj.weight"]
    with pytest.raises(ValueError, match=r"missing keys \['o_proj.weight'\]"):
        controller.load_reference_state_dict(bad)


def test_presets_match_the_reference_design():
    assert set(ACTION_CONTROLLER_CONFIGS) == {
        "wan_ti2v_5b",
        "wan_ti2v_5b_sparse",
        "wan_ti2v_5b_adaln",
        "wan_ti2v_5b_add",
    }
    sparse = ACTION_CONTROLLER_CONFIGS["wan_ti2v_5b_sparse"]
    assert sparse["inject_layers"] == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]
    assert ACTION_CONTROLLER_CONFIGS["wan_ti2v_5b_adaln"]["injection_type"] == "adaln_tmod"
    assert ACTION_CONTROLLER_CONFIGS["wan_ti2v_5b_add"]["injection_type"] == "add_residual"
    with torch.device("meta"):  # full size without allocating
        controller = WanActionController(**ACTION_CONTROLLER_CONFIGS["wan_ti2v_5b_sparse"])
    assert controller.should_inject(27) and not controller.should_inject(28)
    assert controller.temporal_pos_embed.shape == (1, 20, 3072) and controller.output_scale.shape == (30,)
    assert tiny_controller().magnitude_scale.tolist() == [100.0] * 4 + [1.0] * 4  # the drone scale by default


def test_shapes_and_unused_heads_are_frozen():
    controller = tiny_controller("cross_attn_frame")
    emb = controller.build_action_emb(torch.ones(2, 3, 8), torch.rand(2, 3, 8))
    assert emb.shape == (2, 3, 24)
    assert controller.action_tmod(emb).shape == (2, 3, 6, 24)
    trainable = {n for n, p in controller.named_parameters() if p.requires_grad}
    assert "v_proj.weight" in trainable and "output_scale" in trainable
    assert "q_proj.weight" not in trainable and "action_to_tmod.weight" not in trainable
    windowed = tiny_controller("cross_attn_frame", action_window=1)
    assert windowed.q_proj.weight.requires_grad


@pytest.mark.parametrize("window", [0, 1])
def test_apply_action_leaves_frame_zero_alone_and_is_frame_local(window):
    torch.manual_seed(0)
    controller = tiny_controller("cross_attn_frame", action_window=window)
    with torch.no_grad():
        controller.output_scale.fill_(1.0)
    t, h, w = 4, 2, 2
    x = torch.randn(1, t * h * w, 24)
    binary, magnitude = torch.ones(1, 3, 8), torch.rand(1, 3, 8)
    out = controller(x, binary, magnitude, t, h, w, block_idx=0)
    assert torch.equal(out[:, : h * w], x[:, : h * w])  # latent frame 0: no action
    changed = magnitude.clone()
    changed[:, 1] += 1.0  # action step 1 = latent frame 2
    out2 = controller(x, binary, changed, t, h, w, block_idx=0)
    diff = (out2 - out).abs().view(1, t, h * w, 24).amax(dim=(0, 2, 3))
    expected = {2} if window == 0 else {1, 2, 3}  # a window of radius 1 also reaches the neighbours
    assert {f for f in range(t) if diff[f] > 0} == expected


def test_bad_configuration():
    with pytest.raises(ValueError, match="injection_type"):
        tiny_controller("film")
    with pytest.raises(ValueError, match=r"layers: \[5\] outside"):
        tiny_controller(inject_layers=[0, 5])
